// The built-in player page: the player side of docs/PROTOCOL.md in plain JavaScript.
// It connects to the signalling WebSocket of the server it came from (or `?ss=ws://…`), lists the
// streamers, subscribes to `?StreamerId=` (Epic's parameter name) or the only one, or lets the
// user pick; answers the streamer's offer, trickles ICE both ways, plays muted (click to unmute)
// and sends mouse, keyboard and touch input on the data channel in Unreal Engine's format
// (input.js). It reconnects by itself with back-off. Nothing is fetched from another host.
// State for tests and curious users: window.player.state.
'use strict';

(() => {
    const { TO_STREAMER, FROM_STREAMER, encode, utf16Body } = window.PSInput;
    const params = new URLSearchParams(location.search);
    // Same scheme family as the page: an https page must use wss (browsers refuse ws from it).
    const signallingUrl = params.get('ss') || `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/`;
    const wantedId = params.get('StreamerId');

    const $ = (id) => document.getElementById(id);
    const video = $('video');
    const stage = $('stage');

    const state = {
        url: signallingUrl,
        status: 'starting',
        connections: 0, // WebSocket opens
        closes: [], // {code, reason}
        playerId: null, // learnt from the offer's playerId (PROTOCOL.md §4, F1)
        streamerId: null, // the one we subscribed to
        streamerList: null,
        subscribeFailed: [],
        dataChannelOpen: false,
        protocolReceived: 0, // Protocol messages (id 255) taken
        initialSettings: null,
        qualityControl: null,
        sent: {}, // input message name → count
        frames: { count: 0, presented: 0, first: null }, // first: ms since navigation
        stats: null
    };

    // Message ids in use: the defaults, updated by the streamer's Protocol message.
    const toStreamer = JSON.parse(JSON.stringify(TO_STREAMER));
    const fromStreamer = { ...FROM_STREAMER };

    let socket = null;
    let pc = null;
    let channel = null;
    let peerOptions = {};
    let retry = 0; // failed attempts in a row, for the back-off
    let reconnectTimer = null;
    let listTimer = null;
    let remoteDescriptionSet = Promise.resolve();

    // ---- what the user sees
    function show(status, text, kind = '') {
        state.status = status;
        $('state').textContent = status;
        $('state').className = `status ${kind}`;
        $('message').textContent = text || '';
    }

    // ---- signalling (PROTOCOL.md §2, player connects)
    function send(msg) {
        if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(msg));
    }

    function connect() {
        clearTimeout(reconnectTimer);
        show('connecting', `Connecting to ${signallingUrl}…`);
        socket = new WebSocket(signallingUrl);
        socket.onopen = () => {
            state.connections += 1;
            show('connected', 'Connected; looking for streamers…');
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
            closePeer();
            clearTimeout(listTimer);
            // PROTOCOL.md §11: 1000 "streamer disconnected", 1011 (kicked), 1012 (restart) and
            // 1013 (try later) all mean: come back. We always do, with back-off.
            const why = event.reason ? `${event.code} "${event.reason}"` : `code ${event.code}`;
            const delay = Math.min(30000, 1000 * 2 ** retry);
            retry += 1;
            show('reconnecting', `Disconnected (${why}). Reconnecting in ${Math.round(delay / 1000)} s…`, 'bad');
            reconnectTimer = setTimeout(connect, delay);
        };
    }

    async function onMessage(msg) {
        switch (msg.type) {
            case 'config':
                // peerConnectionOptions is what RTCPeerConnection takes (iceServers, …).
                peerOptions = msg.peerConnectionOptions || {};
                send({ type: 'listStreamers' });
                break;
            case 'playerCount':
                break;
            case 'streamerList':
                onStreamerList(msg.ids || []);
                break;
            case 'subscribeFailed':
                // §6: unknown streamer, full (max_players), or subscribing too fast.
                state.subscribeFailed.push(msg.message);
                state.streamerId = null;
                show('subscribe failed', `${msg.message}`, 'bad');
                addButton('Try again', () => send({ type: 'listStreamers' }));
                break;
            case 'streamerIdChanged':
                state.streamerId = msg.newID;
                $('streamer').textContent = msg.newID;
                break;
            case 'offer':
                await onOffer(msg);
                break;
            case 'iceCandidate':
                if (pc && msg.candidate) {
                    await remoteDescriptionSet;
                    await pc.addIceCandidate(msg.candidate).catch((e) => console.warn('bad candidate', e));
                }
                break;
            case 'ping':
                // §9: a server protocol ping is answered with the same time.
                send({ type: 'pong', time: msg.time });
                break;
            default:
                break;
        }
    }

    function onStreamerList(ids) {
        state.streamerList = ids;
        clearTimeout(listTimer);
        if (wantedId !== null) {
            if (ids.includes(wantedId)) return subscribe(wantedId);
            show('waiting', `Streamer "${wantedId}" is not connected. Waiting for it…`);
        } else if (ids.length === 1) {
            return subscribe(ids[0]);
        } else if (ids.length === 0) {
            show('waiting', 'No streamer is connected. Waiting for one…');
        } else {
            show('pick', 'Pick a streamer:');
            const picker = document.createElement('div');
            picker.id = 'picker';
            for (const id of ids) {
                const b = document.createElement('button');
                b.textContent = id;
                b.onclick = () => subscribe(id);
                picker.appendChild(b);
            }
            $('message').appendChild(picker);
            return undefined;
        }
        // Nobody to subscribe to yet: ask again in a while.
        listTimer = setTimeout(() => send({ type: 'listStreamers' }), 3000);
        return undefined;
    }

    function addButton(label, onclick) {
        const b = document.createElement('button');
        b.textContent = label;
        b.style.marginLeft = '1em';
        b.onclick = onclick;
        $('message').appendChild(b);
    }

    function subscribe(id) {
        state.streamerId = id;
        $('streamer').textContent = id;
        show('subscribing', `Waiting for ${id} to start the stream…`);
        send({ type: 'subscribe', streamerId: id });
    }

    // ---- WebRTC
    async function onOffer(msg) {
        closePeer();
        if (msg.playerId !== undefined) state.playerId = String(msg.playerId);
        pc = new RTCPeerConnection(peerOptions);
        const mine = pc;
        pc.onicecandidate = (event) => {
            if (event.candidate && event.candidate.candidate) send({ type: 'iceCandidate', candidate: event.candidate.toJSON() });
        };
        pc.ontrack = (event) => {
            if (event.track.kind !== 'video' && event.track.kind !== 'audio') return;
            const stream = event.streams[0] || new MediaStream([event.track]);
            if (video.srcObject !== stream) video.srcObject = stream;
            play();
        };
        pc.ondatachannel = (event) => setChannel(event.channel);
        pc.onconnectionstatechange = () => {
            if (mine !== pc) return;
            if (pc.connectionState === 'connected') {
                retry = 0;
                show('playing', '', 'ok');
            } else if (pc.connectionState === 'failed') {
                show('failed', 'The media connection failed (no route to the streamer: a TURN server may be needed).', 'bad');
            }
        };
        remoteDescriptionSet = pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
        await remoteDescriptionSet;
        const answer = await pc.createAnswer();
        await pc.setLocalDescription(answer);
        send({ type: 'answer', sdp: answer.sdp });
        show('negotiating', 'Starting the stream…');
    }

    function closePeer() {
        if (pc) pc.close();
        pc = null;
        channel = null;
        state.dataChannelOpen = false;
        video.srcObject = null;
    }

    function play() {
        video.play().then(
            () => {
                $('unmute').hidden = !video.muted;
            },
            () => {
                // Even muted autoplay can be refused; a click then starts it.
                show('click to play', 'Click to start the video.');
                stage.addEventListener('click', () => play(), { once: true });
            }
        );
    }
    $('unmute').onclick = (event) => {
        event.stopPropagation();
        video.muted = false;
        $('unmute').hidden = true;
        video.play().catch(() => {});
    };

    // ---- the data channel (Unreal's messages, input.js)
    function setChannel(dc) {
        channel = dc;
        dc.binaryType = 'arraybuffer';
        dc.onopen = () => {
            state.dataChannelOpen = true;
        };
        dc.onclose = () => {
            state.dataChannelOpen = false;
        };
        dc.onmessage = (event) => onDataMessage(event.data);
        if (dc.readyState === 'open') state.dataChannelOpen = true;
    }

    function onDataMessage(data) {
        if (!(data instanceof ArrayBuffer) || data.byteLength < 1) return;
        const name = fromStreamer[new Uint8Array(data)[0]];
        if (name === 'Protocol') {
            takeProtocol(utf16Body(data));
            // As Epic's frontend does once it has the protocol.
            sendMessage('RequestInitialSettings');
            sendMessage('RequestQualityControl');
        } else if (name === 'InitialSettings') {
            try {
                state.initialSettings = JSON.parse(utf16Body(data));
            } catch {
                state.initialSettings = {};
            }
        } else if (name === 'QualityControlOwnership') {
            state.qualityControl = new Uint8Array(data)[1] === 1;
        }
    }

    // The streamer's protocol: {"Direction":0 (to streamer) | 1 (from streamer), Name: {id, structure}}.
    // Names we do not know are ignored; known ones take the streamer's id (and structure).
    function takeProtocol(text) {
        let proto;
        try {
            proto = JSON.parse(text);
        } catch {
            return;
        }
        const direction = proto.Direction;
        delete proto.Direction;
        for (const [name, def] of Object.entries(proto)) {
            if (!def || typeof def.id !== 'number') continue;
            if (direction === 0 && toStreamer[name]) {
                toStreamer[name] = { id: def.id, structure: Array.isArray(def.structure) && def.structure.length ? def.structure : toStreamer[name].structure };
            } else if (direction === 1) {
                for (const [id, known] of Object.entries(fromStreamer)) if (known === name) delete fromStreamer[id];
                fromStreamer[def.id] = name;
            }
        }
        state.protocolReceived += 1;
    }

    function sendMessage(name, values) {
        const def = toStreamer[name];
        if (!def || !channel || channel.readyState !== 'open') return false;
        channel.send(encode(def, values));
        state.sent[name] = (state.sent[name] || 0) + 1;
        return true;
    }

    // ---- input. Coordinates are normalised to 0..65535 over the video picture itself (not its
    // letterbox), deltas to ±32767 over half of it, as Unreal expects.
    function picture() {
        const r = video.getBoundingClientRect();
        const vw = video.videoWidth || r.width;
        const vh = video.videoHeight || r.height;
        const scale = Math.min(r.width / vw, r.height / vh);
        const w = vw * scale;
        const h = vh * scale;
        return { left: r.left + (r.width - w) / 2, top: r.top + (r.height - h) / 2, w, h };
    }
    function coord(clientX, clientY) {
        const p = picture();
        const nx = (clientX - p.left) / p.w;
        const ny = (clientY - p.top) / p.h;
        const inRange = nx >= 0 && nx <= 1 && ny >= 0 && ny <= 1;
        return { inRange, x: inRange ? nx * 65535 : 65535, y: inRange ? ny * 65535 : 65535 };
    }
    function delta(dx, dy) {
        const p = picture();
        return { x: (dx / (0.5 * p.w)) * 32767, y: (dy / (0.5 * p.h)) * 32767 };
    }
    const playing = () => !!channel && video.readyState >= 2;

    stage.addEventListener('mousedown', (e) => {
        if (!playing()) return;
        stage.focus();
        const c = coord(e.clientX, e.clientY);
        sendMessage('MouseDown', [e.button, c.x, c.y]);
        e.preventDefault();
    });
    stage.addEventListener('mouseup', (e) => {
        if (!playing()) return;
        const c = coord(e.clientX, e.clientY);
        sendMessage('MouseUp', [e.button, c.x, c.y]);
        e.preventDefault();
    });
    stage.addEventListener('mousemove', (e) => {
        if (!playing()) return;
        const c = coord(e.clientX, e.clientY);
        const d = delta(e.movementX, e.movementY);
        sendMessage('MouseMove', [c.x, c.y, d.x, d.y]);
    });
    stage.addEventListener('mouseenter', () => playing() && sendMessage('MouseEnter'));
    stage.addEventListener('mouseleave', () => playing() && sendMessage('MouseLeave'));
    stage.addEventListener('dblclick', (e) => {
        if (!playing()) return;
        const c = coord(e.clientX, e.clientY);
        sendMessage('MouseDouble', [e.button, c.x, c.y]);
    });
    stage.addEventListener(
        'wheel',
        (e) => {
            if (!playing()) return;
            const c = coord(e.clientX, e.clientY);
            // Unreal takes the old wheelDelta convention: 120 per notch, up is positive.
            sendMessage('MouseWheel', [-Math.sign(e.deltaY) * 120, c.x, c.y]);
            e.preventDefault();
        },
        { passive: false }
    );
    stage.addEventListener('contextmenu', (e) => e.preventDefault());

    // Keyboard: the legacy keyCode Unreal maps (right-hand modifiers get 253–255, as in Epic's frontend).
    function keyCode(e) {
        if (e.code === 'ShiftRight') return 253;
        if (e.code === 'ControlRight') return 254;
        if (e.code === 'AltRight') return 255;
        return e.keyCode;
    }
    document.addEventListener('keydown', (e) => {
        if (!playing() || !keyCode(e)) return;
        sendMessage('KeyDown', [keyCode(e), e.repeat ? 1 : 0]);
        // Backspace gives no keypress in browsers; Unreal wants one for text fields.
        if (e.keyCode === 8) sendMessage('KeyPress', [8]);
        // Keep the keys that would move the page (space, arrows, tab) for the stream.
        if ([9, 32, 37, 38, 39, 40].includes(e.keyCode)) e.preventDefault();
    });
    document.addEventListener('keyup', (e) => {
        if (!playing() || !keyCode(e)) return;
        sendMessage('KeyUp', [keyCode(e)]);
    });
    document.addEventListener('keypress', (e) => {
        if (!playing() || !e.charCode) return;
        sendMessage('KeyPress', [e.charCode]);
    });

    // Touch: one message per finger; fingers get small stable indices (0 first), as Unreal expects.
    const fingers = new Map(); // touch identifier → index
    function finger(t) {
        if (!fingers.has(t.identifier)) {
            let i = 0;
            while ([...fingers.values()].includes(i)) i += 1;
            fingers.set(t.identifier, i);
        }
        return fingers.get(t.identifier);
    }
    function touches(name, list, e) {
        if (!playing()) return;
        for (const t of list) {
            const c = coord(t.clientX, t.clientY);
            const force = Math.round(255 * (t.force > 0 ? t.force : 1));
            sendMessage(name, [1, c.x, c.y, finger(t), force, c.inRange ? 1 : 0]);
        }
        e.preventDefault();
    }
    stage.addEventListener('touchstart', (e) => touches('TouchStart', e.changedTouches, e), { passive: false });
    stage.addEventListener('touchmove', (e) => touches('TouchMove', e.touches, e), { passive: false });
    stage.addEventListener(
        'touchend',
        (e) => {
            touches('TouchEnd', e.changedTouches, e);
            for (const t of e.changedTouches) fingers.delete(t.identifier);
        },
        { passive: false }
    );

    // ---- decoded frames and live stats (getStats once a second)
    function onFrame(now, meta) {
        state.frames.count += 1;
        if (state.frames.first === null) state.frames.first = Math.round(now);
        state.frames.presented = meta.presentedFrames;
        video.requestVideoFrameCallback(onFrame);
    }
    if ('requestVideoFrameCallback' in HTMLVideoElement.prototype) video.requestVideoFrameCallback(onFrame);

    let last = null;
    setInterval(async () => {
        if (!pc) {
            $('stats').textContent = '';
            last = null;
            return;
        }
        const report = await pc.getStats();
        let inbound = null;
        let rtt = null;
        report.forEach((s) => {
            if (s.type === 'inbound-rtp' && s.kind === 'video') inbound = s;
            if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded' && s.currentRoundTripTime !== undefined) {
                rtt = s.currentRoundTripTime;
            }
        });
        if (!inbound) return;
        const now = inbound.timestamp;
        const stats = {
            kbps: last ? Math.round(((inbound.bytesReceived - last.bytes) * 8) / (now - last.t)) : 0,
            fps: last ? Math.round(((inbound.framesDecoded - last.frames) * 1000) / (now - last.t)) : 0,
            rttMs: rtt === null ? null : Math.round(rtt * 1000),
            packetsLost: inbound.packetsLost || 0,
            width: inbound.frameWidth,
            height: inbound.frameHeight
        };
        last = { t: now, bytes: inbound.bytesReceived, frames: inbound.framesDecoded };
        state.stats = stats;
        $('stats').textContent =
            `${stats.width || '?'}×${stats.height || '?'}  ${stats.kbps} kbit/s  ${stats.fps} fps  ` +
            `rtt ${stats.rttMs === null ? '?' : stats.rttMs} ms  lost ${stats.packetsLost}`;
    }, 1000);

    connect();

    window.player = { state, sendMessage, toStreamer, fromStreamer };
})();
