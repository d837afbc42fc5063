// The player page: Epic's Pixel Streaming frontend library, unmodified, as a browser would run it.
// run.mjs bundles this file with esbuild once per frontend version (the import below is aliased to
// the ue5.5 or ue5.6 package for those runs). Settings come from the URL in Epic's own parameter
// names (useUrlParams): ss (our player port), StreamerId, KeepaliveDelay, ...
// The page only watches: the frontend's events, its WebSocket, and the decoded video frames
// (requestVideoFrameCallback, with a pixel sample of the moving pattern every 100 ms).
import { Config, PixelStreaming } from '@epicgames-ps/lib-pixelstreamingfrontend-ue5.7';

const state = {
    events: [], // [type, ms since navigation, detail]
    loadId: Math.random(), // unchanged as long as the page is not reloaded
    // received/sent: [type, ms]; playerId: from the last offer; subscribed: streamerIds sent
    ws: { opens: [], closes: [], received: [], sent: [], playerId: null, subscribed: [] },
    streamerLists: [], // { ids, autoSelected, wanted }
    subscribeFailed: [],
    disconnects: [], // webRtcDisconnected event strings
    frames: { count: 0, first: null, firstByConnection: {}, presented: 0, samples: [] }
};
const now = () => Math.round(performance.now());

// ---- WebSocket: record what the frontend's transport sends and receives.
const NativeWebSocket = window.WebSocket;
class RecordingWebSocket extends NativeWebSocket {
    constructor(...args) {
        super(...args);
        this.addEventListener('open', () => state.ws.opens.push(now()));
        this.addEventListener('close', (e) => state.ws.closes.push({ code: e.code, reason: e.reason, t: now() }));
        this.addEventListener('message', (e) => {
            try {
                const msg = JSON.parse(e.data);
                state.ws.received.push([msg.type, now()]);
                if (msg.type === 'offer') state.ws.playerId = msg.playerId;
            } catch {
                state.ws.received.push(['(not json)', now()]);
            }
        });
    }
    send(data) {
        try {
            const msg = JSON.parse(data);
            state.ws.sent.push([msg.type, now()]);
            if (msg.type === 'subscribe') state.ws.subscribed.push(msg.streamerId);
        } catch {
            state.ws.sent.push(['(not json)', now()]);
        }
        return super.send(data);
    }
}
window.WebSocket = RecordingWebSocket;

// ---- Epic's frontend
const config = new Config({
    useUrlParams: true,
    initialSettings: {
        AutoConnect: true,
        AutoPlayVideo: true,
        StartVideoMuted: true,
        WaitForStreamer: true,
        MatchViewportRes: false,
        TimeoutIfIdle: false,
        MouseInput: false,
        KeyboardInput: false,
        TouchInput: false,
        GamepadInput: false,
        XRControllerInput: false
    }
});
const parent = document.getElementById('player');
const ps = new PixelStreaming(config, { videoElementParent: parent });

const watched = [
    'webRtcConnecting',
    'webRtcConnected',
    'webRtcFailed',
    'webRtcDisconnected',
    'dataChannelOpen',
    'dataChannelClose',
    'videoInitialized',
    'streamLoading',
    'playStream',
    'playStreamError',
    'playStreamRejected',
    'streamerListMessage',
    'subscribeFailed',
    'initialSettings',
    'playerCount'
];
for (const type of watched) {
    ps.addEventListener(type, (event) => {
        const data = event.data || {};
        let detail;
        if (type === 'streamerListMessage') {
            detail = {
                ids: [...data.messageStreamerList.ids],
                autoSelected: data.autoSelectedStreamerId,
                wanted: data.wantedStreamerId
            };
            state.streamerLists.push(detail);
        } else if (type === 'subscribeFailed') {
            detail = data.message;
            state.subscribeFailed.push(detail);
        } else if (type === 'webRtcDisconnected') {
            detail = data.eventString;
            state.disconnects.push(detail);
        } else if (type === 'playerCount') {
            detail = data.count;
        }
        state.events.push([type, now(), detail]);
    });
}

// ---- decoded frames
const sampler = document.createElement('canvas');
sampler.width = 160;
sampler.height = 90;
const sctx = sampler.getContext('2d', { willReadFrequently: true });
let lastSample = -Infinity;
let armedOn = null;

function sample(video, t, presented) {
    sctx.drawImage(video, 0, 0, sampler.width, sampler.height);
    const px = sctx.getImageData(0, 0, sampler.width, sampler.height).data;
    // Background colour: the top-left corner, clear of the name and counter.
    let r = 0;
    let g = 0;
    let b = 0;
    let n = 0;
    for (let y = 2; y < 18; y += 1) {
        for (let x = 2; x < 24; x += 1) {
            const i = (y * sampler.width + x) * 4;
            r += px[i];
            g += px[i + 1];
            b += px[i + 2];
            n += 1;
        }
    }
    // The white bar on the black band (rows 120–170 of 180): centroid of bright columns.
    let sum = 0;
    let weight = 0;
    for (let x = 0; x < sampler.width; x += 1) {
        let bright = 0;
        for (let y = 64; y < 82; y += 2) {
            const i = (y * sampler.width + x) * 4;
            if (px[i] + px[i + 1] + px[i + 2] > 540) bright += 1;
        }
        sum += bright * x;
        weight += bright;
    }
    const barX = weight > 0 ? Math.round((sum / weight) * (video.videoWidth / sampler.width)) : null;
    const colour = [Math.round(r / n), Math.round(g / n), Math.round(b / n)];
    state.frames.samples.push({ t, presented, colour, barX, w: video.videoWidth, h: video.videoHeight });
    if (state.frames.samples.length > 200) state.frames.samples.shift();
}

function onFrame(video, t, meta) {
    armedOn = null;
    const f = state.frames;
    f.count += 1;
    f.presented = meta.presentedFrames;
    if (f.first === null) f.first = Math.round(t);
    const connection = state.ws.opens.length;
    if (f.firstByConnection[connection] === undefined) f.firstByConnection[connection] = Math.round(t);
    if (t - lastSample >= 100) {
        lastSample = t;
        sample(video, Math.round(t), meta.presentedFrames);
    }
    arm();
}

// Re-armed after every frame, and whenever the frontend swaps the element or its source.
function arm() {
    const video = parent.querySelector('video');
    if (!video || armedOn === video) return;
    armedOn = video;
    video.requestVideoFrameCallback((t, meta) => onFrame(video, t, meta));
}
setInterval(arm, 200);

window.interop = {
    state,
    ps,
    // Input as Unreal receives it: a UIInteraction on the data channel. False if the frontend refused.
    sendInput: (text) => ps.emitUIInteraction(text)
};
