// A WebRTC streamer of our own: the streamer side of PROTOCOL.md, as Unreal's Pixel Streaming
// plugin (and Epic's JSStreamer) speak it, with a canvas instead of a game.
//
// URL parameters: ws (our streamer port), id (the id it asks for), colour (#rrggbb background).
// For each playerConnected it opens an RTCPeerConnection carrying the canvas track inside a
// MediaStream (Epic's frontend ignores a track that arrives without one) and a data channel on
// which it sends the `Protocol` message (id 255) first, since Epic's frontend sends no input
// before it. Everything it sees is recorded in window.streamer.state for the test to read.
(() => {
    'use strict';
    const params = new URLSearchParams(location.search);
    const url = params.get('ws');
    const wantedId = params.get('id') || 'InteropStreamer';
    const colour = params.get('colour') || '#d02828';

    // Data channel message ids (Epic's default protocol).
    const TO_STREAMER = {
        IFrameRequest: { id: 0, structure: [] },
        RequestQualityControl: { id: 1, structure: [] },
        FpsRequest: { id: 2, structure: [] },
        AverageBitrateRequest: { id: 3, structure: [] },
        StartStreaming: { id: 4, structure: [] },
        StopStreaming: { id: 5, structure: [] },
        LatencyTest: { id: 6, structure: ['string'] },
        RequestInitialSettings: { id: 7, structure: [] },
        TestEcho: { id: 8, structure: [] },
        UIInteraction: { id: 50, structure: ['string'] },
        Command: { id: 51, structure: ['string'] },
        TextboxEntry: { id: 52, structure: ['string'] }
    };
    const FROM_STREAMER = { QualityControlOwnership: 0, InitialSettings: 7, Protocol: 255 };

    const state = {
        url,
        wantedId,
        colour,
        connections: 0, // WebSocket opens
        closes: [], // {code, reason} of our WebSocket
        committedId: null,
        received: [], // signalling message types, in order
        peerOptions: [], // peerConnectionOptions of every config
        playerConnected: [], // player ids, in order
        playerDisconnected: [],
        players: {} // id → { dataChannelOpen, inputs: [UIInteraction strings], dataIds: {id: count}, layerPreference, answer, pcState }
    };
    const peers = new Map(); // player id → RTCPeerConnection
    const channels = new Map(); // player id → its RTCDataChannel
    let socket = null;

    // ---- the moving pattern: background colour = identity, a white bar moving along the bottom.
    const canvas = document.getElementById('pattern');
    const ctx = canvas.getContext('2d');
    let frame = 0;
    function draw() {
        frame += 1;
        ctx.fillStyle = colour;
        ctx.fillRect(0, 0, canvas.width, canvas.height);
        ctx.fillStyle = '#000000';
        ctx.fillRect(0, 110, canvas.width, 70);
        ctx.fillStyle = '#ffffff';
        ctx.font = 'bold 28px sans-serif';
        ctx.fillText(wantedId, 60, 60);
        ctx.font = '16px monospace';
        ctx.fillText(String(frame), 60, 90);
        const x = (frame * 5) % (canvas.width - 24);
        ctx.fillRect(x, 120, 24, 50);
    }
    draw();
    setInterval(draw, 33);
    const stream = canvas.captureStream(30);
    const track = stream.getVideoTracks()[0];
    track.contentHint = 'motion';

    // ---- data channel messages: one id byte, then fields; strings are UTF-16LE.
    function utf16(text) {
        const bytes = new Uint8Array(text.length * 2);
        const view = new DataView(bytes.buffer);
        for (let i = 0; i < text.length; i += 1) view.setUint16(i * 2, text.charCodeAt(i), true);
        return bytes;
    }
    function message(id, body) {
        const out = new Uint8Array(1 + (body ? body.length : 0));
        out[0] = id;
        if (body) out.set(body, 1);
        return out.buffer;
    }
    function readString(view, offset) {
        const length = view.getUint16(offset, true);
        let text = '';
        for (let i = 0; i < length; i += 1) text += String.fromCharCode(view.getUint16(offset + 2 + i * 2, true));
        return text;
    }

    function onDataMessage(playerId, data) {
        const record = state.players[playerId];
        const view = new DataView(data);
        const id = view.getUint8(0);
        record.dataIds[id] = (record.dataIds[id] || 0) + 1;
        const channel = channels.get(playerId);
        if (id === TO_STREAMER.UIInteraction.id) {
            record.inputs.push(readString(view, 1));
        } else if (id === TO_STREAMER.RequestInitialSettings.id) {
            const settings = {
                PixelStreaming: { AllowPixelStreamingCommands: false, DisableLatencyTest: true },
                Encoder: { TargetBitrate: -1, MaxBitrate: 20000000, MinQP: 0, MaxQP: 51 },
                WebRTC: { FPS: 30, MinBitrate: 100000, MaxBitrate: 20000000, LowQP: 25, HighQP: 37 },
                ConfigOptions: {}
            };
            channel.send(message(FROM_STREAMER.InitialSettings, utf16(JSON.stringify(settings))));
        } else if (id === TO_STREAMER.RequestQualityControl.id) {
            channel.send(message(FROM_STREAMER.QualityControlOwnership, new Uint8Array([1])));
        }
    }

    function sendProtocol(channel) {
        const proto = { Direction: 0 };
        for (const [name, def] of Object.entries(TO_STREAMER)) proto[name] = def;
        channel.send(message(FROM_STREAMER.Protocol, utf16(JSON.stringify(proto))));
    }

    // ---- signalling
    function send(msg) {
        if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(msg));
    }

    async function playerConnected(playerId) {
        closePeer(playerId);
        const record = {
            dataChannelOpen: false,
            inputs: [],
            dataIds: {},
            layerPreference: 0,
            answer: false,
            pcState: 'new'
        };
        state.players[playerId] = record;
        // As a real streamer does: the server's peerConnectionOptions (loopback.js drops their servers).
        const pc = new RTCPeerConnection(state.peerOptions[state.peerOptions.length - 1] || {});
        peers.set(playerId, pc);
        pc.onconnectionstatechange = () => {
            record.pcState = pc.connectionState;
        };
        pc.onicecandidate = (event) => {
            if (event.candidate && event.candidate.candidate) {
                send({ type: 'iceCandidate', playerId, candidate: event.candidate.toJSON() });
            }
        };
        pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
        const channel = pc.createDataChannel('datachannel', { ordered: true });
        channel.binaryType = 'arraybuffer';
        channels.set(playerId, channel);
        channel.onopen = () => {
            record.dataChannelOpen = true;
            sendProtocol(channel);
        };
        channel.onclose = () => {
            record.dataChannelOpen = false;
        };
        channel.onmessage = (event) => onDataMessage(playerId, event.data);
        const offer = await pc.createOffer();
        await pc.setLocalDescription(offer);
        send({ type: 'offer', playerId, sdp: offer.sdp });
    }

    function closePeer(playerId) {
        const pc = peers.get(playerId);
        if (pc) {
            pc.close();
            peers.delete(playerId);
            channels.delete(playerId);
        }
        if (state.players[playerId]) state.players[playerId].pcState = 'closed';
    }

    function onMessage(msg) {
        state.received.push(msg.type);
        const record = msg.playerId !== undefined ? state.players[msg.playerId] : undefined;
        switch (msg.type) {
            case 'config':
                state.peerOptions.push(msg.peerConnectionOptions);
                break;
            case 'identify':
                send({ type: 'endpointId', id: wantedId, protocolVersion: '1.1.0' });
                break;
            case 'endpointIdConfirm':
                state.committedId = msg.committedId;
                break;
            case 'playerConnected':
                state.playerConnected.push(msg.playerId);
                playerConnected(msg.playerId).catch((e) => console.error('offer failed', e));
                break;
            case 'playerDisconnected':
                state.playerDisconnected.push(msg.playerId);
                closePeer(msg.playerId);
                break;
            case 'answer':
                if (record && peers.has(msg.playerId)) {
                    record.answer = true;
                    peers.get(msg.playerId).setRemoteDescription({ type: 'answer', sdp: msg.sdp });
                }
                break;
            case 'iceCandidate':
                if (peers.has(msg.playerId) && msg.candidate) {
                    peers.get(msg.playerId).addIceCandidate(msg.candidate).catch(() => {});
                }
                break;
            case 'layerPreference':
                if (record) record.layerPreference += 1;
                break;
            default:
                break;
        }
    }

    function connect() {
        socket = new WebSocket(url);
        socket.onopen = () => {
            state.connections += 1;
        };
        socket.onmessage = (event) => {
            let msg;
            try {
                msg = JSON.parse(event.data);
            } catch {
                return;
            }
            onMessage(msg);
        };
        socket.onclose = (event) => {
            state.closes.push({ code: event.code, reason: event.reason });
        };
    }

    // Leave as a streamer process would on exit: the socket closes and every peer connection ends.
    function disconnect() {
        for (const id of [...peers.keys()]) closePeer(id);
        if (socket) socket.close(1000, 'streamer restarting');
    }

    connect();

    window.streamer = {
        state,
        disconnect,
        reconnect: connect,
        frame: () => frame
    };
})();
