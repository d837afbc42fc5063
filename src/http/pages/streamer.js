// The built-in demo streamer page: the streamer side of docs/PROTOCOL.md, as Unreal Engine's
// Pixel Streaming plugin speaks it, with a canvas test pattern (or the webcam, or a shared
// screen) instead of a game. For each playerConnected it opens one RTCPeerConnection and, as UE
// does for `dataChannel: true, sfu: false`, a data channel on which it first sends the
// `Protocol` message (id 255), then answers RequestInitialSettings and RequestQualityControl,
// and shows every input message it receives, decoded, under the player's id.
//
// The streamer port comes from /signalling/config.json (the port the server bound), or from
// `?ss=ws://host:port`. `?id=` sets the streamer id asked for (default DemoStreamer).
// `?protocol=shifted` announces other input ids (below).
// State for tests and curious users: window.streamer.state.
'use strict';

(() => {
    const { TO_STREAMER, decode, utf16Message, byId } = window.PSInput;
    const params = new URLSearchParams(location.search);
    const wantedId = params.get('id') || params.get('StreamerId') || 'DemoStreamer';
    // `?protocol=shifted` announces the keyboard, mouse and touch messages (ids 60–89) at ids
    // 100 higher: a check that a player honours the Protocol message rather than the defaults.
    const PROTOCOL = {};
    for (const [name, def] of Object.entries(TO_STREAMER)) {
        const shift = params.get('protocol') === 'shifted' && def.id >= 60 && def.id < 90 ? 100 : 0;
        PROTOCOL[name] = { id: def.id + shift, structure: def.structure };
    }
    const TO_STREAMER_BY_ID = byId(PROTOCOL);
    const FROM = { QualityControlOwnership: 0, InitialSettings: 7, Protocol: 255 };

    const $ = (id) => document.getElementById(id);
    const state = {
        url: null,
        status: 'starting',
        connections: 0,
        closes: [],
        committedId: null,
        playerConnected: [], // ids, in order
        playerDisconnected: [],
        // id → { dataChannelOpen, pcState, handshake: [names], inputs: [{name, values, text}] }
        players: {},
        source: 'pattern'
    };
    const peers = new Map(); // player id → { pc, channel, sender }
    let socket = null;
    let peerOptions = {};
    let retry = 0;

    function show(status, kind = '') {
        state.status = status;
        $('state').textContent = status;
        $('state').className = `status ${kind}`;
    }

    // ---- the source: a moving test pattern with a frame counter and the time
    const canvas = $('pattern');
    const ctx = canvas.getContext('2d');
    let frame = 0;
    function draw() {
        frame += 1;
        const w = canvas.width;
        const h = canvas.height;
        const hue = (frame * 2) % 360;
        const g = ctx.createLinearGradient(0, 0, w, h);
        g.addColorStop(0, `hsl(${hue}, 60%, 35%)`);
        g.addColorStop(1, `hsl(${(hue + 120) % 360}, 60%, 25%)`);
        ctx.fillStyle = g;
        ctx.fillRect(0, 0, w, h);
        // Colour bars, a moving white bar and a sweeping circle: motion an encoder must carry.
        const bars = ['#fff', '#ff0', '#0ff', '#0f0', '#f0f', '#f00', '#00f', '#000'];
        bars.forEach((c, i) => {
            ctx.fillStyle = c;
            ctx.fillRect((i * w) / bars.length, 0, w / bars.length, h * 0.12);
        });
        ctx.fillStyle = '#000';
        ctx.fillRect(0, h * 0.78, w, h * 0.16);
        ctx.fillStyle = '#fff';
        ctx.fillRect((frame * 6) % (w - 40), h * 0.8, 40, h * 0.12);
        const a = frame / 30;
        ctx.beginPath();
        ctx.arc(w / 2 + Math.cos(a) * w * 0.3, h * 0.45 + Math.sin(a) * h * 0.18, h * 0.06, 0, 2 * Math.PI);
        ctx.fill();
        ctx.font = `bold ${Math.round(h * 0.09)}px sans-serif`;
        ctx.fillText(state.committedId || wantedId, w * 0.05, h * 0.3);
        ctx.font = `${Math.round(h * 0.07)}px monospace`;
        ctx.fillText(`frame ${frame}`, w * 0.05, h * 0.45);
        ctx.fillText(new Date().toISOString().slice(11, 23), w * 0.05, h * 0.58);
        ctx.fillText(`${peers.size} player${peers.size === 1 ? '' : 's'}`, w * 0.05, h * 0.71);
    }
    draw();
    setInterval(draw, 33);
    const patternStream = canvas.captureStream(30);
    let stream = patternStream;
    let track = patternStream.getVideoTracks()[0];
    track.contentHint = 'motion';
    $('preview').srcObject = stream;

    // Switching source replaces the track on every player's sender: no renegotiation.
    async function useSource(name) {
        let next;
        try {
            if (name === 'camera') next = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
            else if (name === 'screen') next = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
            else next = patternStream;
        } catch (e) {
            $('source').textContent = `source: ${state.source} (${name} refused: ${e.message})`;
            return;
        }
        if (stream !== patternStream && stream !== next) for (const t of stream.getTracks()) t.stop();
        stream = next;
        track = next.getVideoTracks()[0];
        state.source = name;
        $('preview').srcObject = stream;
        $('source').textContent = `source: ${name === 'pattern' ? 'test pattern' : name}`;
        for (const p of peers.values()) p.sender.replaceTrack(track).catch(() => {});
        // A shared screen can end from the browser's own UI: go back to the pattern.
        track.onended = () => name !== 'pattern' && useSource('pattern');
    }
    $('pattern-button').onclick = () => useSource('pattern');
    $('camera-button').onclick = () => useSource('camera');
    $('screen-button').onclick = () => useSource('screen');

    // ---- players list and input log
    function renderPlayers() {
        const list = $('players');
        list.textContent = '';
        for (const [id, p] of Object.entries(state.players)) {
            if (!peers.has(id)) continue;
            const li = document.createElement('li');
            li.textContent = `${id}: ${p.pcState}${p.dataChannelOpen ? ', data channel open' : ''}, ${p.inputs.length} input messages`;
            list.appendChild(li);
        }
        if (!list.firstChild) list.textContent = 'none yet: open the player page in another tab';
    }

    const norm = (v) => (v / 65535).toFixed(2);
    function describe(name, v) {
        switch (name) {
            case 'MouseDown':
            case 'MouseUp':
            case 'MouseDouble':
                return `${name} button ${v[0]} at (${norm(v[1])}, ${norm(v[2])})`;
            case 'MouseMove':
                return `MouseMove to (${norm(v[0])}, ${norm(v[1])}) by (${v[2]}, ${v[3]})`;
            case 'MouseWheel':
                return `MouseWheel ${v[0]} at (${norm(v[1])}, ${norm(v[2])})`;
            case 'KeyDown':
                return `KeyDown ${v[0]}${v[1] ? ' (repeat)' : ''}`;
            case 'KeyUp':
                return `KeyUp ${v[0]}`;
            case 'KeyPress':
                return `KeyPress ${JSON.stringify(String.fromCharCode(v[0]))}`;
            case 'TouchStart':
            case 'TouchMove':
            case 'TouchEnd':
                return `${name} finger ${v[3]} at (${norm(v[1])}, ${norm(v[2])}) force ${v[4]}`;
            default:
                return v.length ? `${name} ${v.map((x) => JSON.stringify(x)).join(' ')}` : name;
        }
    }

    let renderQueued = false;
    function logInput(playerId, text) {
        const list = $('inputs');
        const li = document.createElement('li');
        li.textContent = `${playerId}: ${text}`;
        list.insertBefore(li, list.firstChild);
        while (list.childNodes.length > 200) list.removeChild(list.lastChild);
        if (!renderQueued) {
            renderQueued = true;
            requestAnimationFrame(() => {
                renderQueued = false;
                renderPlayers();
            });
        }
    }

    // ---- the data channel handshake Epic's frontend expects
    function sendProtocol(channel) {
        // Direction 0: the messages we take from players, with their ids and layouts.
        const proto = { Direction: 0, ...PROTOCOL };
        channel.send(utf16Message(FROM.Protocol, JSON.stringify(proto)));
    }

    function onDataMessage(playerId, data) {
        const record = state.players[playerId];
        const p = peers.get(playerId);
        if (!record || !p || !(data instanceof ArrayBuffer)) return;
        const msg = decode(TO_STREAMER_BY_ID, data);
        if (!msg) {
            logInput(playerId, `unknown message id ${new Uint8Array(data)[0]} (${data.byteLength} bytes)`);
            return;
        }
        if (msg.name === 'RequestInitialSettings') {
            record.handshake.push(msg.name);
            const settings = {
                PixelStreaming: { AllowPixelStreamingCommands: false, DisableLatencyTest: true },
                Encoder: { TargetBitrate: -1, MaxBitrate: 20000000, MinQP: 0, MaxQP: 51 },
                WebRTC: { FPS: 30, MinBitrate: 100000, MaxBitrate: 20000000, LowQP: 25, HighQP: 37 },
                ConfigOptions: {}
            };
            p.channel.send(utf16Message(FROM.InitialSettings, JSON.stringify(settings)));
            return;
        }
        if (msg.name === 'RequestQualityControl') {
            record.handshake.push(msg.name);
            // One byte: 1 = this player has quality control.
            const out = new Uint8Array([FROM.QualityControlOwnership, 1]);
            p.channel.send(out.buffer);
            return;
        }
        const text = describe(msg.name, msg.values);
        record.inputs.push({ name: msg.name, values: msg.values, text });
        if (record.inputs.length > 1000) record.inputs.shift();
        // Mouse moves are many: show them in the list but not one line each.
        if (msg.name === 'MouseMove' && record.inputs.length > 1 && record.inputs[record.inputs.length - 2].name === 'MouseMove') {
            const first = $('inputs').firstChild;
            if (first && first.textContent.startsWith(`${playerId}: MouseMove`)) {
                first.textContent = `${playerId}: ${text}`;
                return;
            }
        }
        logInput(playerId, text);
    }

    // ---- signalling (PROTOCOL.md §2, streamer connects)
    function send(msg) {
        if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(msg));
    }

    async function playerConnected(msg) {
        const playerId = String(msg.playerId);
        closePeer(playerId);
        const record = { dataChannelOpen: false, pcState: 'new', handshake: [], inputs: [], sfu: !!msg.sfu };
        state.players[playerId] = record;
        const pc = new RTCPeerConnection(peerOptions);
        const sender = pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] }).sender;
        const p = { pc, channel: null, sender };
        peers.set(playerId, p);
        pc.onconnectionstatechange = () => {
            record.pcState = pc.connectionState;
            renderPlayers();
        };
        pc.onicecandidate = (event) => {
            if (event.candidate && event.candidate.candidate) send({ type: 'iceCandidate', playerId: msg.playerId, candidate: event.candidate.toJSON() });
        };
        // UE opens the data channel itself for a direct player (dataChannel true, sfu false); an
        // SFU sets up its own channels (streamerDataChannels, §7), which this page does not.
        if (msg.dataChannel !== false && !msg.sfu) {
            const channel = pc.createDataChannel('datachannel', { ordered: true });
            channel.binaryType = 'arraybuffer';
            p.channel = channel;
            channel.onopen = () => {
                record.dataChannelOpen = true;
                sendProtocol(channel);
                renderPlayers();
            };
            channel.onclose = () => {
                record.dataChannelOpen = false;
            };
            channel.onmessage = (event) => onDataMessage(playerId, event.data);
        }
        const offer = await pc.createOffer();
        await pc.setLocalDescription(offer);
        // The playerId is sent back as received (a string, or a number from numeric ids).
        send({ type: 'offer', playerId: msg.playerId, sdp: offer.sdp });
        renderPlayers();
    }

    function closePeer(playerId) {
        const p = peers.get(playerId);
        if (p) p.pc.close();
        peers.delete(playerId);
        if (state.players[playerId]) state.players[playerId].pcState = 'closed';
        renderPlayers();
    }

    async function onMessage(msg) {
        const id = msg.playerId === undefined ? undefined : String(msg.playerId);
        const p = id === undefined ? undefined : peers.get(id);
        switch (msg.type) {
            case 'config':
                peerOptions = msg.peerConnectionOptions || {};
                break;
            case 'identify':
                send({ type: 'endpointId', id: wantedId, protocolVersion: '1.1.0' });
                break;
            case 'endpointIdConfirm':
                state.committedId = msg.committedId;
                $('id').textContent = msg.committedId;
                retry = 0;
                show('streaming', 'ok');
                break;
            case 'playerConnected':
                state.playerConnected.push(String(msg.playerId));
                await playerConnected(msg);
                break;
            case 'playerDisconnected':
                state.playerDisconnected.push(id);
                closePeer(id);
                break;
            case 'answer':
                if (p) await p.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
                break;
            case 'iceCandidate':
                if (p && msg.candidate) await p.pc.addIceCandidate(msg.candidate).catch((e) => console.warn('bad candidate', e));
                break;
            case 'ping':
                send({ type: 'pong', time: msg.time });
                break;
            default:
                break;
        }
    }

    async function streamerUrl() {
        if (params.get('ss')) return params.get('ss');
        const response = await fetch('/signalling/config.json', { cache: 'no-cache' });
        const config = await response.json();
        return `${config.streamerTls ? 'wss' : 'ws'}://${location.hostname}:${config.streamerPort}/`;
    }

    async function connect() {
        show('connecting');
        try {
            state.url = state.url || (await streamerUrl());
        } catch (e) {
            show(`cannot read /signalling/config.json (${e.message}); give ?ss=ws://host:port`, 'bad');
            return;
        }
        socket = new WebSocket(state.url);
        socket.onopen = () => {
            state.connections += 1;
            show('identifying');
        };
        socket.onmessage = (event) => {
            let msg;
            try {
                msg = JSON.parse(event.data);
            } catch {
                return;
            }
            onMessage(msg).catch((e) => console.error('signalling message failed', msg.type, e));
        };
        socket.onclose = (event) => {
            state.closes.push({ code: event.code, reason: event.reason });
            for (const id of [...peers.keys()]) closePeer(id);
            state.committedId = null;
            const delay = Math.min(30000, 1000 * 2 ** retry);
            retry += 1;
            show(`disconnected (${event.code}${event.reason ? ` "${event.reason}"` : ''}); reconnecting in ${Math.round(delay / 1000)} s`, 'bad');
            setTimeout(connect, delay);
        };
    }

    renderPlayers();
    connect();

    window.streamer = { state, useSource, frame: () => frame };
})();
