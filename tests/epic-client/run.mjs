#!/usr/bin/env node
// Runs Epic's own signalling client code (@epicgames-ps/lib-pixelstreamingcommon-ue5.7:
// WebSocketTransportNJS over `ws`, SignallingProtocol, Messages, MessageHelpers) as one
// streamer and one player against our signalling server, and checks the whole
// identify / listStreamers / subscribe / offer / answer / ICE / ping / disconnect flow.
//
// Interface:
//   STREAMER_URL=ws://127.0.0.1:8888 PLAYER_URL=ws://127.0.0.1:80 node tests/epic-client/run.mjs
// Optional: STEP_TIMEOUT_MS (default 5000), EPIC_CLIENT_DEBUG=1 (show the library's own logs).
// Prints one line per step; exits 0 only if every step passed, 1 on a failed step,
// 2 on a usage or setup error.

const STREAMER_URL = process.env.STREAMER_URL;
const PLAYER_URL = process.env.PLAYER_URL;
const STEP_TIMEOUT_MS = Number(process.env.STEP_TIMEOUT_MS || 5000);
const DEBUG = !!process.env.EPIC_CLIENT_DEBUG;
// How long the streamer must stay quiet after its playerDisconnected ("exactly one").
const QUIET_MS = 500;
// Whole-run watchdog: no run may hang the calling test.
const WATCHDOG_MS = 60000;

const STREAMER_ID = 'EpicStreamer';

if (!STREAMER_URL || !PLAYER_URL) {
    console.error('usage: STREAMER_URL=ws://host:port PLAYER_URL=ws://host:port node run.mjs');
    process.exit(2);
}
if (!Number.isFinite(STEP_TIMEOUT_MS) || STEP_TIMEOUT_MS <= 0) {
    console.error(`STEP_TIMEOUT_MS must be a positive number, got ${JSON.stringify(process.env.STEP_TIMEOUT_MS)}`);
    process.exit(2);
}

// Imports resolve relative to this file, so the cwd does not matter. Dynamic import so a
// missing `npm ci` gives a clear message instead of a module-resolution stack trace.
let lib;
try {
    lib = await import('@epicgames-ps/lib-pixelstreamingcommon-ue5.7');
} catch (e) {
    console.error(
        `cannot load @epicgames-ps/lib-pixelstreamingcommon-ue5.7 (${e && e.message}); ` +
            `run tests/epic-client/setup.sh first`
    );
    process.exit(2);
}
const { SignallingProtocol, WebSocketTransportNJS, Messages, MessageHelpers, overrideLogger } = lib;

// Route the library's Logger: errors and warnings always (prefixed), info/debug only with
// EPIC_CLIENT_DEBUG. Library errors (e.g. validateMessage rejections) explain our failures.
overrideLogger({
    InitLogging() {},
    Debug: (m) => DEBUG && console.error(`  [epic-lib debug] ${m}`),
    Info: (m) => DEBUG && console.error(`  [epic-lib info] ${m}`),
    Warning: (m) => console.error(`  [epic-lib warning] ${m}`),
    Error: (m) => console.error(`  [epic-lib error] ${m}`)
});

// ---------------------------------------------------------------------------------------
// Steps and failures

class StepFailure extends Error {}

let stepNo = 0;
let passed = 0;
function ok(description) {
    stepNo += 1;
    passed += 1;
    console.log(`ok ${stepNo} - ${description}`);
}
function fail(message) {
    throw new StepFailure(message);
}
function check(cond, message) {
    if (!cond) fail(message);
}
const j = (v) => JSON.stringify(v);

// ---------------------------------------------------------------------------------------
// One endpoint: Epic's transport + protocol, with an in-order queue of received messages.

class Endpoint {
    constructor(role, url) {
        this.role = role;
        this.url = url;
        this.transport = new WebSocketTransportNJS();
        this.protocol = new SignallingProtocol(this.transport);
        this.queue = [];
        this.waiter = null; // { resolve } woken on any new message or close
        this.closed = null; // { code, reason } once the socket closed
        this.opened = false;
        this.lastError = null;
        // Types the server may send at any point that this flow does not care about.
        this.tolerated = new Set();

        // SignallingProtocol parses each frame and emits every message on the transport as
        // 'message' (and per type on the protocol). We take 'message' to see the exact order.
        this.transport.on('message', (msg) => {
            if (DEBUG) console.error(`  [${this.role} <-] ${j(msg)}`);
            this.queue.push(msg);
            this.wake();
        });
        this.transport.on('out', (msg) => {
            if (DEBUG) console.error(`  [${this.role} ->] ${j(msg)}`);
        });
        this.transport.on('open', () => {
            this.opened = true;
            this.wake();
        });
        this.transport.on('error', (ev) => {
            this.lastError = (ev && (ev.message || (ev.error && ev.error.message))) || 'unknown error';
            this.wake();
        });
        this.transport.on('close', (ev) => {
            this.closed = { code: ev ? ev.code : undefined, reason: ev ? String(ev.reason || '') : '' };
            this.wake();
        });
    }

    wake() {
        const w = this.waiter;
        this.waiter = null;
        if (w) w.resolve();
    }

    // Resolves on the next event (message, open, error, close) or when the deadline passes.
    waitEvent(deadline) {
        return new Promise((resolve) => {
            const ms = Math.max(0, deadline - Date.now());
            const timer = setTimeout(() => {
                if (this.waiter && this.waiter.resolve === done) this.waiter = null;
                resolve();
            }, ms);
            const done = () => {
                clearTimeout(timer);
                resolve();
            };
            this.waiter = { resolve: done };
        });
    }

    closedText() {
        return `code ${this.closed.code}${this.closed.reason ? ` "${this.closed.reason}"` : ''}`;
    }

    async connect() {
        const started = this.protocol.connect(this.url);
        check(started, `${this.role}: transport.connect(${this.url}) returned false`);
        const deadline = Date.now() + STEP_TIMEOUT_MS;
        while (!this.opened) {
            if (this.closed) fail(`${this.role}: connection to ${this.url} closed before opening (${this.closedText()})${this.lastError ? `: ${this.lastError}` : ''}`);
            if (Date.now() >= deadline) fail(`${this.role}: no WebSocket connection to ${this.url} within ${STEP_TIMEOUT_MS} ms${this.lastError ? ` (last error: ${this.lastError})` : ''}`);
            await this.waitEvent(deadline);
        }
    }

    // Takes the next message, which must be of `type` (tolerated types are skipped and logged),
    // validates it with Epic's MessageHelpers.validateMessage, and returns it.
    async expect(type, what) {
        const deadline = Date.now() + STEP_TIMEOUT_MS;
        for (;;) {
            while (this.queue.length > 0) {
                const msg = this.queue.shift();
                if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
                    fail(`${this.role}: expected ${type}${what ? ` (${what})` : ''}, got a non-object message ${j(msg)}`);
                }
                if (msg.type !== type && this.tolerated.has(msg.type)) {
                    console.log(`# ${this.role}: ignoring ${j(msg)}`);
                    continue;
                }
                if (msg.type !== type) {
                    fail(`${this.role}: expected ${type}${what ? ` (${what})` : ''}, got ${j(msg)}`);
                }
                const msgType = MessageHelpers.validateMessage(msg);
                check(
                    msgType !== null && msgType === Messages[type],
                    `${this.role}: ${type} rejected by Epic's MessageHelpers.validateMessage: ${j(msg)}`
                );
                return msg;
            }
            if (this.closed) fail(`${this.role}: connection closed (${this.closedText()}) while waiting for ${type}${what ? ` (${what})` : ''}`);
            if (Date.now() >= deadline) fail(`${this.role}: timed out after ${STEP_TIMEOUT_MS} ms waiting for ${type}${what ? ` (${what})` : ''}`);
            await this.waitEvent(deadline);
        }
    }

    // Takes the next message, which must be one of `types` (tolerated types are skipped).
    async expectAny(types) {
        const deadline = Date.now() + STEP_TIMEOUT_MS;
        for (;;) {
            while (this.queue.length > 0) {
                const next = this.queue[0];
                if (next && typeof next === 'object' && types.includes(next.type)) return this.expect(next.type);
                if (next && typeof next === 'object' && this.tolerated.has(next.type)) {
                    console.log(`# ${this.role}: ignoring ${j(this.queue.shift())}`);
                    continue;
                }
                fail(`${this.role}: expected one of ${types.join(', ')}, got ${j(next)}`);
            }
            if (this.closed) fail(`${this.role}: connection closed (${this.closedText()}) while waiting for ${types.join(' or ')}`);
            if (Date.now() >= deadline) fail(`${this.role}: timed out after ${STEP_TIMEOUT_MS} ms waiting for ${types.join(' or ')}`);
            await this.waitEvent(deadline);
        }
    }

    // Asserts that nothing at all arrives (and the socket stays open) for `ms`.
    async expectQuiet(ms, after) {
        const deadline = Date.now() + ms;
        while (Date.now() < deadline) {
            if (this.queue.length > 0) fail(`${this.role}: expected nothing more after ${after}, got ${j(this.queue[0])}`);
            if (this.closed) fail(`${this.role}: connection closed (${this.closedText()}) after ${after}`);
            await this.waitEvent(deadline);
        }
        if (this.queue.length > 0) fail(`${this.role}: expected nothing more after ${after}, got ${j(this.queue[0])}`);
    }

    // Builds a message with Epic's MessageHelpers.createMessage and sends it with
    // SignallingProtocol.sendMessage. Returns the exact JSON object that went on the wire.
    send(messageType, params) {
        const msg = MessageHelpers.createMessage(messageType, params);
        check(this.protocol.isConnected(), `${this.role}: cannot send ${msg.type}, transport not connected`);
        this.protocol.sendMessage(msg);
        return JSON.parse(JSON.stringify(msg));
    }

    async close(code, reason) {
        this.protocol.disconnect(code, reason);
        const deadline = Date.now() + STEP_TIMEOUT_MS;
        while (!this.closed) {
            if (Date.now() >= deadline) fail(`${this.role}: close handshake not completed within ${STEP_TIMEOUT_MS} ms`);
            await this.waitEvent(deadline);
        }
    }
}

// Expected JSON of a forwarded message: every sent key in order; `playerId` replaced in
// place if present, otherwise appended last (PROTOCOL.md §1.10, §4 F2).
function withPlayerId(sent, playerId) {
    const out = {};
    for (const [k, v] of Object.entries(sent)) out[k] = k === 'playerId' ? playerId : v;
    if (!Object.prototype.hasOwnProperty.call(out, 'playerId')) out.playerId = playerId;
    return out;
}

// ---------------------------------------------------------------------------------------
// The flow

const SDP_OFFER = [
    'v=0',
    'o=- 4611731400430051336 2 IN IP4 127.0.0.1',
    's=-',
    't=0 0',
    'a=group:BUNDLE 0',
    'a=msid-semantic: WMS pixelstreaming',
    'm=video 9 UDP/TLS/RTP/SAVPF 96',
    'c=IN IP4 0.0.0.0',
    'a=mid:0',
    'a=sendonly',
    'a=rtpmap:96 H264/90000',
    ''
].join('\r\n');
const SDP_ANSWER = SDP_OFFER.replace('a=sendonly', 'a=recvonly').replace('4611731400430051336', '7283928374928374');
const STREAMER_CANDIDATE = {
    candidate: 'candidate:1 1 udp 2122260223 192.0.2.10 50000 typ host generation 0',
    sdpMid: '0',
    sdpMLineIndex: 0
};
const PLAYER_CANDIDATE = {
    candidate: 'candidate:2 1 udp 2122260223 192.0.2.20 60000 typ host generation 0',
    sdpMid: '0',
    sdpMLineIndex: 0
};

async function main() {
    const streamer = new Endpoint('streamer', STREAMER_URL);
    const player = new Endpoint('player', PLAYER_URL);
    // playerCount is sent once after config only if the server's player_count is on.
    player.tolerated.add('playerCount');

    try {
        // --- streamer identifies -------------------------------------------------------
        await streamer.connect();
        ok(`streamer connected to ${STREAMER_URL} (WebSocketTransportNJS)`);

        // config and identify may come in either order (PROTOCOL.md §2: both orders work).
        const first = await streamer.expectAny(['config', 'identify']);
        const second = await streamer.expect(first.type === 'config' ? 'identify' : 'config');
        const config = first.type === 'config' ? first : second;
        check(
            config.peerConnectionOptions !== null && typeof config.peerConnectionOptions === 'object' && !Array.isArray(config.peerConnectionOptions),
            `streamer: config.peerConnectionOptions is not a JSON object: ${j(config)}`
        );
        ok(`streamer got config (protocolVersion ${config.protocolVersion}) and identify`);

        const endpointId = streamer.send(Messages.endpointId, {
            id: STREAMER_ID,
            protocolVersion: SignallingProtocol.SIGNALLING_VERSION
        });
        ok(`streamer sent ${j(endpointId)}`);

        const confirm = await streamer.expect('endpointIdConfirm', `committedId ${STREAMER_ID}`);
        check(confirm.committedId === STREAMER_ID, `streamer: endpointIdConfirm.committedId is ${j(confirm.committedId)}, expected "${STREAMER_ID}": ${j(confirm)}`);
        ok(`streamer got endpointIdConfirm committedId "${STREAMER_ID}"`);

        // --- player lists and subscribes ----------------------------------------------
        await player.connect();
        ok(`player connected to ${PLAYER_URL} (WebSocketTransportNJS)`);

        const pconfig = await player.expect('config', 'first message on the player port');
        check(
            pconfig.peerConnectionOptions !== null && typeof pconfig.peerConnectionOptions === 'object' && !Array.isArray(pconfig.peerConnectionOptions),
            `player: config.peerConnectionOptions is not a JSON object: ${j(pconfig)}`
        );
        ok(`player got config (protocolVersion ${pconfig.protocolVersion})`);

        player.send(Messages.listStreamers);
        const list = await player.expect('streamerList', 'reply to listStreamers');
        check(Array.isArray(list.ids), `player: streamerList.ids is not an array: ${j(list)}`);
        check(list.ids.includes(STREAMER_ID), `player: streamerList does not contain "${STREAMER_ID}": ${j(list)}`);
        ok(`player got streamerList ${j(list.ids)}`);

        player.send(Messages.subscribe, { streamerId: STREAMER_ID });
        ok(`player sent subscribe {streamerId:"${STREAMER_ID}"}`);

        // --- streamer sees the player, offers --------------------------------------------
        const connected = await streamer.expect('playerConnected', 'after the player subscribed');
        check(typeof connected.playerId === 'string' && connected.playerId !== '', `streamer: playerConnected.playerId is not a non-empty string: ${j(connected)}`);
        check(connected.sfu === false, `streamer: playerConnected.sfu is ${j(connected.sfu)}, expected false: ${j(connected)}`);
        check(connected.dataChannel === true, `streamer: playerConnected.dataChannel is ${j(connected.dataChannel)}, expected true: ${j(connected)}`);
        const playerId = connected.playerId;
        ok(`streamer got playerConnected playerId "${playerId}" (sfu false, dataChannel true)`);

        const offer = streamer.send(Messages.offer, { playerId, sdp: SDP_OFFER });
        const sIce = streamer.send(Messages.iceCandidate, { playerId, candidate: STREAMER_CANDIDATE });
        ok(`streamer sent offer and iceCandidate to "${playerId}"`);

        // --- player gets them unchanged, answers -----------------------------------------
        const pOffer = await player.expect('offer', 'forwarded from the streamer');
        check(pOffer.sdp === SDP_OFFER, `player: offer.sdp differs from the streamer's: got ${j(pOffer.sdp)}`);
        check(pOffer.playerId === playerId, `player: offer.playerId is ${j(pOffer.playerId)}, expected "${playerId}" (kept as sent)`);
        check(j(pOffer) === j(offer), `player: offer not forwarded unchanged: sent ${j(offer)}, got ${j(pOffer)}`);
        ok(`player got the offer unchanged (same sdp, playerId "${pOffer.playerId}")`);

        const pIce = await player.expect('iceCandidate', "the streamer's candidate");
        check(j(pIce) === j(sIce), `player: iceCandidate not forwarded unchanged: sent ${j(sIce)}, got ${j(pIce)}`);
        ok(`player got the streamer's iceCandidate unchanged`);

        const answer = player.send(Messages.answer, { sdp: SDP_ANSWER });
        const pIceOut = player.send(Messages.iceCandidate, { candidate: PLAYER_CANDIDATE });
        check(!('playerId' in answer) && !('playerId' in pIceOut), `player: outgoing answer/iceCandidate unexpectedly carry playerId`);
        ok(`player sent answer and iceCandidate (no playerId)`);

        // --- streamer gets them tagged with the player's id --------------------------------
        const sAnswer = await streamer.expect('answer', "the player's answer");
        check(sAnswer.playerId === playerId, `streamer: answer.playerId is ${j(sAnswer.playerId)}, expected "${playerId}": ${j(sAnswer)}`);
        check(sAnswer.sdp === SDP_ANSWER, `streamer: answer.sdp differs from the player's: got ${j(sAnswer.sdp)}`);
        check(j(sAnswer) === j(withPlayerId(answer, playerId)), `streamer: answer should be the player's with playerId appended: expected ${j(withPlayerId(answer, playerId))}, got ${j(sAnswer)}`);
        ok(`streamer got the answer with playerId "${playerId}"`);

        const sIceIn = await streamer.expect('iceCandidate', "the player's candidate");
        check(sIceIn.playerId === playerId, `streamer: iceCandidate.playerId is ${j(sIceIn.playerId)}, expected "${playerId}": ${j(sIceIn)}`);
        check(j(sIceIn) === j(withPlayerId(pIceOut, playerId)), `streamer: iceCandidate should be the player's with playerId appended: expected ${j(withPlayerId(pIceOut, playerId))}, got ${j(sIceIn)}`);
        ok(`streamer got the player's iceCandidate with playerId "${playerId}"`);

        // --- protocol ping -------------------------------------------------------------
        const time = Date.now();
        const ping = player.send(Messages.ping, { time });
        check(ping.time === time, `player: createMessage(ping) changed time ${time} to ${j(ping.time)}`);
        const pong = await player.expect('pong', `reply to ping time ${time}`);
        check(pong.time === time, `player: pong.time is ${j(pong.time)}, expected ${time} (echo of the ping): ${j(pong)}`);
        ok(`player ping time ${time} answered by pong with the same time`);

        // --- player leaves -------------------------------------------------------------
        await player.close(1000, 'epic-client test done');
        ok(`player closed (${player.closedText()})`);

        const gone = await streamer.expect('playerDisconnected', `after player "${playerId}" closed`);
        check(gone.playerId === playerId, `streamer: playerDisconnected.playerId is ${j(gone.playerId)}, expected "${playerId}": ${j(gone)}`);
        await streamer.expectQuiet(QUIET_MS, `playerDisconnected {playerId:"${playerId}"}`);
        ok(`streamer got exactly one playerDisconnected {playerId:"${playerId}"} (then ${QUIET_MS} ms of silence)`);

        await streamer.close(1000, 'epic-client test done');
        ok(`streamer closed (${streamer.closedText()})`);
        return 0;
    } catch (e) {
        if (e instanceof StepFailure) {
            console.log(`not ok ${stepNo + 1} - ${e.message}`);
        } else {
            console.log(`not ok ${stepNo + 1} - internal error: ${e && e.stack ? e.stack : e}`);
        }
        return 1;
    } finally {
        for (const ep of [player, streamer]) {
            try {
                if (!ep.closed && ep.transport.webSocket) ep.transport.webSocket.terminate();
            } catch {
                /* ignore */
            }
        }
    }
}

const watchdog = setTimeout(() => {
    console.log(`not ok ${stepNo + 1} - watchdog: whole run exceeded ${WATCHDOG_MS} ms`);
    process.exit(1);
}, WATCHDOG_MS);
watchdog.unref();

const code = await main();
console.log(code === 0 ? `# all ${passed} steps passed` : `# FAILED after ${passed} passing steps`);
process.exit(code);
