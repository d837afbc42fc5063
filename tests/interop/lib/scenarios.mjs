// The interop scenarios (issue 6). Each gets a fresh Session (server, Chromium) and returns
// { ttff: { label: ms }, notes: [...] }; a check that fails throws CheckFailure naming it.
// Time to first frame (ttff) = from the player page's navigation start to its first decoded frame
// (requestVideoFrameCallback), unless a note says otherwise.
import { check, CheckFailure } from './harness.mjs';

const INPUT_TIMEOUT = 10000;

async function ttffOf(page) {
    return page.evaluate(() => window.interop.state.frames.first);
}

// Three players on one streamer: every player plays, the streamer saw three distinct
// playerConnected, and input from each player arrives under that player's id. `beforePlayers`
// runs once the streamer is identified, before any player page loads. Also returns the pages
// and ids, for a scenario that goes on.
async function threePlayers(s, { screenshotName, beforePlayers = async () => {} }) {
    const streamer = await s.openStreamer('StreamerA', 'red');
    await beforePlayers();
    const players = [];
    for (const n of [1, 2, 3]) players.push(await s.openPlayer(`player ${n}`, { streamerId: 'StreamerA' }));
    const ttff = {};
    for (const p of players) {
        await s.waitForVideo(p, 'red');
        ttff[p.label] = await ttffOf(p);
    }
    const seen = await streamer.evaluate(() => window.streamer.state.playerConnected);
    check(
        seen.length === 3 && new Set(seen).size === 3,
        'streamer saw three distinct playerConnected',
        `playerConnected ids: ${JSON.stringify(seen)}`
    );
    const ids = [];
    for (const p of players) ids.push(await s.playerId(p));
    check(
        ids.every((id) => seen.includes(id)) && new Set(ids).size === 3,
        'each player learnt its own id from its offer',
        `players' ids ${JSON.stringify(ids)}, streamer saw ${JSON.stringify(seen)}`
    );
    // Input: a UIInteraction over each player's data channel, carrying a token of its own.
    for (const [i, p] of players.entries()) {
        const accepted = await p.evaluate((token) => window.interop.sendInput({ token }), `input-${i}`);
        check(accepted, 'input reaches the streamer under the player id', `${p.label}: frontend refused to send`);
    }
    await s.waitFor(
        streamer,
        (ids) => ids.every((id, i) => (window.streamer.state.players[id]?.inputs || []).length > 0),
        ids,
        { what: 'a UIInteraction from each of the three players', timeout: INPUT_TIMEOUT, check: 'input reaches the streamer under the player id' }
    );
    const records = await streamer.evaluate(() => window.streamer.state.players);
    for (const [i, id] of ids.entries()) {
        const tokens = records[id].inputs.map((t) => JSON.parse(t).token);
        check(
            tokens.length === 1 && tokens[0] === `input-${i}`,
            'input reaches the streamer under the player id',
            `under ${id} the streamer got ${JSON.stringify(tokens)}, expected ["input-${i}"]`
        );
        // Epic's frontend sends RequestInitialSettings (id 7) once it has our Protocol message.
        check(
            records[id].dataIds[7] >= 1,
            'the frontend took the Protocol message',
            `${id}: no RequestInitialSettings; data channel ids ${JSON.stringify(records[id].dataIds)}`
        );
        check(
            records[id].layerPreference >= 1,
            'layerPreference reaches the streamer under the player id',
            `${id}: ${JSON.stringify(records[id])}`
        );
    }
    const pairs = [];
    for (const p of [streamer, ...players]) pairs.push(...(await s.checkLoopback(p)));
    const shot = await s.screenshot(players[0], screenshotName);
    return {
        ttff,
        notes: [`player ids ${ids.join(', ')}`, `candidate pairs ${[...new Set(pairs)].join('; ')}`, `screenshot ${shot}`],
        streamer,
        players
    };
}

// A player closes its page: exactly one playerDisconnected for it; the others keep playing.
async function playerLeaves(s) {
    const streamer = await s.openStreamer('StreamerA', 'red');
    const players = [];
    for (const n of [1, 2, 3]) players.push(await s.openPlayer(`player ${n}`, { streamerId: 'StreamerA' }));
    const ttff = {};
    for (const p of players) {
        await s.waitForVideo(p, 'red');
        ttff[p.label] = await ttffOf(p);
    }
    return { ttff, notes: [await middlePlayerLeaves(s, streamer, players)] };
}

// The second of three playing players closes its page: exactly one playerDisconnected, for it,
// at the streamer; the other two decode 30 more frames and stay connected. Returns a note.
async function middlePlayerLeaves(s, streamer, players) {
    const leaving = players[1];
    const leavingId = await s.playerId(leaving);
    await leaving.close();
    await s.waitFor(streamer, (id) => window.streamer.state.playerDisconnected.includes(id), leavingId, {
        what: `playerDisconnected ${leavingId} at the streamer`,
        timeout: 5000,
        check: 'exactly one playerDisconnected for the closed player'
    });
    // The others keep playing: 30 more frames each, which also gives a duplicate time to show up.
    for (const p of [players[0], players[2]]) {
        const count = (await s.state(p)).frames.count;
        await s.waitForVideo(p, 'red', { frames: 30, sinceCount: count, check: `${p.label} keeps playing` });
    }
    const state = await streamer.evaluate(() => window.streamer.state);
    const forLeaving = state.playerDisconnected.filter((id) => id === leavingId).length;
    check(
        forLeaving === 1 && state.playerDisconnected.length === 1,
        'exactly one playerDisconnected for the closed player',
        `playerDisconnected: ${JSON.stringify(state.playerDisconnected)} (closed ${leavingId})`
    );
    for (const p of [players[0], players[2]]) {
        const st = await s.state(p);
        check(st.ws.closes.length === 0, `${p.label} keeps playing`, `its WebSocket closed: ${JSON.stringify(st.ws.closes)}`);
    }
    return `closed ${leavingId}; streamer got playerDisconnected ${JSON.stringify(state.playerDisconnected)}`;
}

// Cluster mode (issue 14): the streamer page on node A, three players of Epic's frontend on node
// B, both nodes on one redis-server. Once node B lists the streamer, the checks of
// `three-players`, then those of `player-leaves`: each across the nodes.
async function threePlayersAcrossNodes(s) {
    let asks = 0;
    const played = await threePlayers(s, {
        screenshotName: 'three-players-across-nodes',
        beforePlayers: async () => {
            asks = await s.waitListed('StreamerA', { check: 'node B lists the streamer on node A' });
        }
    });
    const left = await middlePlayerLeaves(s, played.streamer, played.players);
    return { ttff: played.ttff, notes: [`node B listed StreamerA at listStreamers number ${asks}`, ...played.notes, left] };
}

// Two streamers: the player lists both, subscribes to the second by id, and shows its colour.
async function twoStreamers(s) {
    const first = await s.openStreamer('StreamerA', 'red');
    const second = await s.openStreamer('StreamerB', 'blue');
    const player = await s.openPlayer('player', { streamerId: 'StreamerB' });
    await s.waitForVideo(player, 'blue', { check: 'player shows the second streamer' });
    const st = await s.state(player);
    const list = st.streamerLists[0];
    check(
        list && list.ids.includes('StreamerA') && list.ids.includes('StreamerB'),
        'player lists both streamers',
        `streamerList events: ${JSON.stringify(st.streamerLists)}`
    );
    check(
        JSON.stringify(st.ws.subscribed) === '["StreamerB"]',
        'player subscribes to the second streamer by id',
        `subscribes sent: ${JSON.stringify(st.ws.subscribed)}`
    );
    const a = await first.evaluate(() => window.streamer.state.playerConnected);
    const b = await second.evaluate(() => window.streamer.state.playerConnected);
    check(
        a.length === 0 && b.length === 1 && b[0] === st.ws.playerId,
        'only the second streamer gets the player',
        `StreamerA saw ${JSON.stringify(a)}, StreamerB saw ${JSON.stringify(b)}, player is ${st.ws.playerId}`
    );
    const shot = await s.screenshot(player, 'two-streamers-second');
    return {
        ttff: { player: st.frames.first },
        notes: [`streamerList ${JSON.stringify(list.ids)}, subscribed StreamerB, decoded blue`, `screenshot ${shot}`]
    };
}

// The streamer disconnects and comes back with the same id: the player is closed, reconnects by
// itself (Epic's frontend retries after 2 s) and plays again, without a page reload.
async function streamerReconnects(s) {
    const streamer = await s.openStreamer('StreamerA', 'red');
    const player = await s.openPlayer('player', { streamerId: 'StreamerA' });
    await s.waitForVideo(player, 'red');
    const before = await s.state(player);
    await streamer.evaluate(() => window.streamer.disconnect());
    await s.waitFor(player, () => window.interop.state.ws.closes.length === 1, null, {
        what: 'the server closes the player when its streamer leaves',
        timeout: 5000
    });
    const closed = (await s.state(player)).ws.closes[0];
    check(
        closed.code === 1000 && closed.reason === 'streamer disconnected',
        'player closed with 1000 "streamer disconnected"',
        `close ${JSON.stringify(closed)}`
    );
    await streamer.evaluate(() => window.streamer.reconnect());
    await s.waitFor(streamer, () => window.streamer.state.connections === 2 && window.streamer.state.received.filter((t) => t === 'endpointIdConfirm').length === 2, null, {
        what: 'streamer re-identified'
    });
    const committed = await streamer.evaluate(() => window.streamer.state.committedId);
    check(committed === 'StreamerA', 'streamer gets its id back', `committed ${committed}`);
    await s.waitFor(
        player,
        () => window.interop.state.ws.opens.length === 2 && window.interop.state.frames.firstByConnection[2] !== undefined,
        null,
        { what: 'the frontend reconnects on its own and decodes a frame again', timeout: 20000, check: 'player gets the stream back without reload' }
    );
    const count = (await s.state(player)).frames.count;
    const after = await s.waitForVideo(player, 'red', { frames: 20, sinceCount: count, check: 'player gets the stream back without reload' });
    check(after.loadId === before.loadId, 'player gets the stream back without reload', 'the page was reloaded');
    const reconnectTtff = after.frames.firstByConnection[2] - after.ws.opens[1];
    const shot = await s.screenshot(player, 'streamer-reconnects-after');
    const seen = await streamer.evaluate(() => window.streamer.state.playerConnected);
    check(seen.length === 2 && seen[0] !== seen[1], 'streamer sees the player connect again', `playerConnected ${JSON.stringify(seen)}`);
    return {
        ttff: { player: before.frames.first, 'player after reconnect': reconnectTtff },
        notes: [
            `closed ${closed.code} "${closed.reason}"; reconnected as ${seen[1]} (was ${seen[0]})`,
            'ttff after reconnect is from the new WebSocket open to the first new frame',
            `screenshot ${shot}`
        ]
    };
}

// max_players = 1: the second player gets subscribeFailed and no video; the first keeps playing.
async function maxPlayers(s) {
    const streamer = await s.openStreamer('StreamerA', 'red');
    const first = await s.openPlayer('player 1', { streamerId: 'StreamerA' });
    await s.waitForVideo(first, 'red');
    const second = await s.openPlayer('player 2', { streamerId: 'StreamerA' });
    await s.waitFor(second, () => window.interop.state.subscribeFailed.length > 0, null, {
        what: "the frontend's subscribeFailed event",
        timeout: 10000,
        check: 'second player gets subscribeFailed'
    });
    const count = (await s.state(first)).frames.count;
    await s.waitForVideo(first, 'red', { frames: 30, sinceCount: count, check: 'first player keeps playing' });
    const st2 = await s.state(second);
    check(
        /full/.test(st2.subscribeFailed[0]),
        'second player gets subscribeFailed',
        `subscribeFailed ${JSON.stringify(st2.subscribeFailed)}`
    );
    check(st2.frames.count === 0, 'second player gets no video', `it decoded ${st2.frames.count} frames`);
    const seen = await streamer.evaluate(() => window.streamer.state.playerConnected);
    check(seen.length === 1, 'streamer sees only the first player', `playerConnected ${JSON.stringify(seen)}`);
    const st1 = await s.state(first);
    check(st1.ws.closes.length === 0, 'first player keeps playing', `closes ${JSON.stringify(st1.ws.closes)}`);
    return { ttff: { 'player 1': st1.frames.first }, notes: [`player 2: subscribeFailed "${st2.subscribeFailed[0]}", 0 frames`] };
}

// The frontend's keepalive at 1 s: ten pings answered, no drop, video still advancing.
async function keepalive(s) {
    await s.openStreamer('StreamerA', 'red');
    const player = await s.openPlayer('player', { streamerId: 'StreamerA', keepaliveMs: 1000 });
    try {
        await s.waitForVideo(player, 'red');
    } catch (e) {
        // A drop before the first frames is still a drop: report it as one.
        const st = await s.state(player);
        check(st.ws.closes.length === 0, 'keepalive at 1 s: no drop', `closes ${JSON.stringify(st.ws.closes)} before video`);
        throw e;
    }
    const start = await s.state(player);
    const pingsAtStart = start.ws.sent.filter(([t]) => t === 'ping').length;
    // Ten more pings take ten seconds; a drop ends the wait early.
    await s.waitFor(
        player,
        (n) => {
            const st = window.interop.state;
            return st.ws.closes.length > 0 || st.ws.sent.filter(([t]) => t === 'ping').length >= n + 10;
        },
        pingsAtStart,
        { what: 'ten keepalive pings', timeout: 20000 }
    );
    const st = await s.state(player);
    check(
        st.ws.closes.length === 0 && st.ws.opens.length === 1 && st.disconnects.length === 0,
        'keepalive at 1 s: no drop',
        `closes ${JSON.stringify(st.ws.closes)}, disconnects ${JSON.stringify(st.disconnects)}`
    );
    const pings = st.ws.sent.filter(([t]) => t === 'ping');
    const pongs = st.ws.received.filter(([t]) => t === 'pong');
    check(pongs.length >= pings.length - 1, 'keepalive at 1 s: every ping answered', `${pings.length} pings, ${pongs.length} pongs`);
    const span = pings[pings.length - 1][1] - start.frames.first;
    check(span >= 9000, 'keepalive at 1 s: ran 10 s', `only ${span} ms of pings`);
    await s.waitForVideo(player, 'red', { frames: 20, sinceCount: st.frames.count, check: 'keepalive at 1 s: video still advancing' });
    return { ttff: { player: start.frames.first }, notes: [`${pings.length} pings, ${pongs.length} pongs over ${span} ms, no close`] };
}

// Our own pages (src/http/pages/), served by the server: the demo streamer and two built-in
// players (one at `/`, one at /signalling/player?StreamerId=...). Both play; a mouse click and a
// key press driven by Playwright in each player reach the streamer page under that player's id,
// decoded, in its state and in its DOM. The streamer announces its input messages at ids other
// than the defaults (Protocol message, id 255), so this also checks that the player honours it.
async function builtinPages(s) {
    const streamer = await s.openBuiltinStreamer('DemoStreamer', { protocol: 'shifted' });
    const players = [
        await s.openBuiltinPlayer('built-in player 1 (at /)', '/'),
        await s.openBuiltinPlayer('built-in player 2', '/signalling/player?StreamerId=DemoStreamer')
    ];
    const ttff = {};
    for (const p of players) {
        await s.waitForFrames(p, 'builtin', { frames: 20 });
        ttff[p.label] = await p.evaluate(() => window.player.state.frames.first);
        // 20 more: the video keeps advancing.
        await s.waitForFrames(p, 'builtin', { frames: 20, check: `${p.label} video advances` });
    }
    const ids = [];
    for (const p of players) {
        // Our player's own data-channel handshake: Protocol taken, InitialSettings received.
        await s.waitFor(p, () => window.player.state.protocolReceived > 0 && window.player.state.initialSettings !== null, null, {
            what: `${p.label}: Protocol message and InitialSettings`,
            check: 'the built-in player completes the data-channel handshake'
        });
        ids.push(await p.evaluate(() => window.player.state.playerId));
    }
    const seen = await streamer.evaluate(() => window.streamer.state.playerConnected);
    check(
        ids.every((id) => seen.includes(id)) && new Set(ids).size === 2,
        'each built-in player learnt its own id',
        `players' ids ${JSON.stringify(ids)}, streamer saw ${JSON.stringify(seen)}`
    );
    // Input: a click in the middle of the picture and a key, different per player.
    const keys = ['a', 'b'];
    for (const [i, p] of players.entries()) {
        const box = await p.evaluate(() => {
            const r = document.getElementById('video').getBoundingClientRect();
            return { x: r.left + r.width / 2, y: r.top + r.height / 2 };
        });
        await p.mouse.click(box.x, box.y, { button: i === 0 ? 'left' : 'right' });
        await p.keyboard.press(keys[i]);
    }
    await s.waitFor(
        streamer,
        (ids) =>
            ids.every((id) => {
                const names = (window.streamer.state.players[id]?.inputs || []).map((m) => m.name);
                return ['MouseDown', 'MouseUp', 'KeyDown', 'KeyPress', 'KeyUp'].every((n) => names.includes(n));
            }),
        ids,
        { what: 'mouse and key input from both players', timeout: INPUT_TIMEOUT, check: 'input reaches the streamer page under the player id' }
    );
    const records = await streamer.evaluate(() => window.streamer.state.players);
    const shown = await streamer.evaluate(() => document.getElementById('inputs').innerText);
    for (const [i, id] of ids.entries()) {
        const inputs = records[id].inputs;
        const down = inputs.find((m) => m.name === 'MouseDown');
        const button = i === 0 ? 0 : 2;
        const [b, x, y] = down.values;
        check(
            b === button && Math.abs(x / 65535 - 0.5) < 0.02 && Math.abs(y / 65535 - 0.5) < 0.02,
            'input reaches the streamer page under the player id',
            `${id}: MouseDown ${JSON.stringify(down.values)}, expected button ${button} at the centre (32767, 32767)`
        );
        const code = keys[i].toUpperCase().charCodeAt(0);
        const press = inputs.filter((m) => m.name === 'KeyPress').map((m) => m.values[0]);
        const keyDowns = inputs.filter((m) => m.name === 'KeyDown').map((m) => m.values[0]);
        check(
            JSON.stringify(press) === JSON.stringify([keys[i].charCodeAt(0)]) && JSON.stringify(keyDowns) === JSON.stringify([code]),
            'input reaches the streamer page under the player id',
            `${id}: KeyDown ${JSON.stringify(keyDowns)} KeyPress ${JSON.stringify(press)}, expected [${code}] and [${keys[i].charCodeAt(0)}] only`
        );
        const line = `${id}: MouseDown button ${button} at (0.5`;
        check(shown.includes(line), 'the streamer page shows the input', `no line starting "${line}" in:\n${shown.slice(0, 600)}`);
        check(
            records[id].handshake.includes('RequestInitialSettings') && records[id].handshake.includes('RequestQualityControl'),
            'the built-in player completes the data-channel handshake',
            `${id}: handshake ${JSON.stringify(records[id].handshake)}`
        );
    }
    const pairs = [];
    for (const p of [streamer, ...players]) pairs.push(...(await s.checkLoopback(p)));
    const shots = [];
    shots.push(await s.screenshot(players[0], 'builtin-pages-player-1'));
    shots.push(await s.screenshot(players[1], 'builtin-pages-player-2'));
    shots.push(await s.screenshot(streamer, 'builtin-pages-streamer'));
    return {
        ttff,
        notes: [
            `player ids ${ids.join(', ')}; streamer page shows:\n      ${shown.split('\n').slice(0, 6).join('\n      ')}`,
            `candidate pairs ${[...new Set(pairs)].join('; ')}`,
            `screenshots ${shots.join(', ')}`
        ]
    };
}

// Epic's frontend (npm) plays our demo streamer page as it plays Unreal Engine: frames advance,
// and its data-channel handshake completes (InitialSettings received).
async function epicPlaysDemoStreamer(s) {
    const streamer = await s.openBuiltinStreamer('DemoStreamer');
    const player = await s.openPlayer('epic player', { streamerId: 'DemoStreamer' });
    await s.waitForFrames(player, 'epic', { frames: 20 });
    await s.waitForFrames(player, 'epic', { frames: 20, check: 'epic player video advances' });
    await s.waitFor(player, () => window.interop.state.events.some(([t]) => t === 'initialSettings'), null, {
        what: "the frontend's initialSettings event",
        check: "Epic's frontend completes the data-channel handshake"
    });
    const id = await s.playerId(player);
    const record = await streamer.evaluate((id) => window.streamer.state.players[id], id);
    check(
        record && record.handshake.includes('RequestInitialSettings') && record.handshake.includes('RequestQualityControl'),
        "Epic's frontend completes the data-channel handshake",
        `${id}: ${JSON.stringify(record)}`
    );
    // A UIInteraction from Epic's frontend shows up decoded under its id.
    const sent = await player.evaluate(() => window.interop.sendInput('hello from epic'));
    check(sent, 'UIInteraction reaches the demo streamer', 'the frontend refused to send');
    await s.waitFor(
        streamer,
        (id) => (window.streamer.state.players[id]?.inputs || []).some((m) => m.name === 'UIInteraction' && String(m.values[0]).includes('hello from epic')),
        id,
        { what: `UIInteraction under ${id}`, timeout: INPUT_TIMEOUT, check: 'UIInteraction reaches the demo streamer' }
    );
    const pairs = [...(await s.checkLoopback(streamer)), ...(await s.checkLoopback(player))];
    const st = await s.state(player);
    const shot = await s.screenshot(player, 'epic-plays-demo-streamer');
    const shot2 = await s.screenshot(streamer, 'epic-plays-demo-streamer-streamer');
    return {
        ttff: { 'epic player': st.frames.first },
        notes: [`player ${id}; candidate pairs ${[...new Set(pairs)].join('; ')}`, `screenshots ${shot}, ${shot2}`]
    };
}

// The built-in player's failure messages and recovery, with max_players = 1: no streamer yet
// (it waits and lists again), the streamer arrives (it plays), a second player is refused
// (subscribeFailed "… is full …", shown), the streamer leaves (closed 1000, reconnecting, then
// waiting) and a new streamer arrives (it plays again, same page load).
async function builtinPlayerRecovers(s) {
    const player = await s.openBuiltinPlayer('built-in player', '/');
    await s.waitFor(player, () => window.player.state.status === 'waiting', null, { what: 'the "no streamer" state', check: 'the player says no streamer is connected' });
    const waiting = await player.evaluate(() => document.getElementById('message').textContent);
    check(/No streamer is connected/.test(waiting), 'the player says no streamer is connected', `message ${JSON.stringify(waiting)}`);
    let streamer = await s.openBuiltinStreamer('DemoStreamer');
    await s.waitForFrames(player, 'builtin', { frames: 20, check: 'the player subscribes once a streamer arrives' });
    const ttff = { player: await player.evaluate(() => window.player.state.frames.first) };

    const second = await s.openBuiltinPlayer('second built-in player', '/');
    await s.waitFor(second, () => window.player.state.subscribeFailed.length > 0, null, { what: 'subscribeFailed', check: 'a full streamer is shown as such' });
    const full = await second.evaluate(() => ({ failed: window.player.state.subscribeFailed, text: document.getElementById('message').textContent, status: window.player.state.status }));
    check(/is full/.test(full.failed[0]) && full.text.includes(full.failed[0]) && full.status === 'subscribe failed', 'a full streamer is shown as such', JSON.stringify(full));
    await second.close();

    await streamer.close();
    await s.waitFor(player, () => window.player.state.closes.length === 1, null, { what: 'the player closed when its streamer left', timeout: 5000 });
    const closed = await player.evaluate(() => ({ close: window.player.state.closes[0], status: window.player.state.status, text: document.getElementById('message').textContent }));
    check(
        closed.close.code === 1000 && closed.close.reason === 'streamer disconnected' && closed.status === 'reconnecting' && /Disconnected \(1000 "streamer disconnected"\)/.test(closed.text),
        'a disconnect is shown and the player reconnects',
        JSON.stringify(closed)
    );
    await s.waitFor(player, () => window.player.state.connections === 2 && window.player.state.status === 'waiting', null, {
        what: 'the player reconnected and waits for a streamer',
        check: 'a disconnect is shown and the player reconnects'
    });
    streamer = await s.openBuiltinStreamer('DemoStreamer');
    await s.waitForFrames(player, 'builtin', { frames: 20, check: 'the player plays the new streamer' });
    const shot = await s.screenshot(player, 'builtin-player-recovers');
    return {
        ttff,
        notes: [
            `waiting: "${waiting}"; full: "${full.text}"; disconnected: "${closed.text}"`,
            `screenshot ${shot}`
        ]
    };
}

export const SCENARIOS = {
    'three-players': {
        title: '1. one streamer, three players (ue5.7)',
        run: (s) => threePlayers(s, { screenshotName: 'three-players-ue5.7' })
    },
    'three-players-ue5.6': {
        title: '1. one streamer, three players (ue5.6 frontend)',
        frontend: 'ue5.6',
        run: (s) => threePlayers(s, { screenshotName: 'three-players-ue5.6' })
    },
    'three-players-ue5.5': {
        title: '1. one streamer, three players (ue5.5 frontend)',
        frontend: 'ue5.5',
        run: (s) => threePlayers(s, { screenshotName: 'three-players-ue5.5' })
    },
    'player-leaves': { title: '2. a player closes its page', run: playerLeaves },
    'two-streamers': { title: '3. two streamers, subscribe to the second by id', run: twoStreamers },
    'streamer-reconnects': { title: '4. streamer disconnects and reconnects with the same id', run: streamerReconnects },
    'max-players': { title: '5. max_players = 1', serverArgs: ['--max_players', '1'], run: maxPlayers },
    keepalive: { title: '6. frontend keepalive at 1 s for 10 s', run: keepalive },
    'builtin-pages': { title: '7. built-in streamer page and two built-in players', run: builtinPages },
    'builtin-player-recovers': {
        title: '9. built-in player: no streamer, full, streamer leaves and returns',
        serverArgs: ['--max_players', '1'],
        run: builtinPlayerRecovers
    },
    'epic-plays-demo-streamer': { title: "8. Epic's frontend plays the built-in demo streamer", run: epicPlaysDemoStreamer },
    'three-players-across-nodes': {
        title: '10. cluster on Redis: streamer on node A, three players on node B, one leaves',
        cluster: { nodes: [{ id: 'a' }, { id: 'b' }], streamerNode: 0, playerNode: 1 },
        run: threePlayersAcrossNodes
    }
};

// The self-check: the same scenarios through a fault proxy that drops one message type must fail,
// and fail on the check that covers that message; so must the cluster scenario with node B
// outside the cluster. A control run through the proxy dropping nothing must pass, so the
// failures come from the drops, not from the proxy.
export const CONTROL = { scenario: 'player-leaves', proxy: { streamer: [], player: [] } };
export const FAULTS = [
    {
        scenario: 'player-leaves',
        proxy: { streamer: ['playerDisconnected'] },
        expect: 'exactly one playerDisconnected for the closed player',
        what: 'playerDisconnected dropped on its way to the streamer'
    },
    {
        // No proxy: node B runs without --redis_url, outside the cluster, so it never hears of
        // the streamer on node A.
        scenario: 'three-players-across-nodes',
        cluster: { nodes: [{ id: 'a' }, { id: 'b', redis: false }], streamerNode: 0, playerNode: 1 },
        expect: 'node B lists the streamer on node A',
        what: 'node B started without --redis_url'
    },
    {
        scenario: 'keepalive',
        proxy: { player: ['pong'] },
        expect: 'keepalive at 1 s: no drop',
        what: 'pong dropped on its way to the player'
    }
];

export { CheckFailure };
