// One scenario run: our server on ephemeral ports, the page server, Chromium, optional fault
// proxies, and helpers that wait for conditions in the pages (never for fixed times).
import { mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import path from 'node:path';
import { startServer } from './server.mjs';
import { launchBrowser } from './browser.mjs';
import { startFaultProxy } from './proxy.mjs';
import { startRedis } from './redis.mjs';
import { WebSocket } from 'ws';

// A check that did not hold. `check` names it, so the self-check can tell which one failed.
export class CheckFailure extends Error {
    constructor(check, message) {
        super(`${check}: ${message}`);
        this.check = check;
    }
}

export function check(condition, name, message) {
    if (!condition) throw new CheckFailure(name, message);
}

const LOOPBACK_JS = fileURLToPath(new URL('../pages/loopback.js', import.meta.url));

// Background colours of the streamer pattern; the player names the nearest one it decodes.
export const COLOURS = { red: [208, 40, 40], blue: [40, 80, 216] };
const hex = (rgb) => '#' + rgb.map((c) => c.toString(16).padStart(2, '0')).join('');

export function nearestColour(rgb) {
    let best = null;
    let bestDistance = Infinity;
    for (const [name, ref] of Object.entries(COLOURS)) {
        const d = Math.hypot(rgb[0] - ref[0], rgb[1] - ref[1], rgb[2] - ref[2]);
        if (d < bestDistance) {
            bestDistance = d;
            best = name;
        }
    }
    return bestDistance < 60 ? best : `unknown(${rgb.join(',')})`;
}

// Addresses of this machine: the local end of a selected candidate pair must be one of them.
function localAddresses() {
    const out = new Set(['127.0.0.1']);
    for (const list of Object.values(os.networkInterfaces())) for (const a of list || []) out.add(a.address);
    return out;
}

// Cluster nodes heart-beat every 100 ms and declare a silent node dead after 2 s (no scenario
// loses a node; the margin keeps a busy machine's pauses from ending one).
const CLUSTER_TIMING = ['--cluster_heartbeat_interval', '0.1', '--cluster_node_timeout', '2'];

export class Session {
    constructor({ servers, redis, web, browser, log, screenshots, frontend }) {
        // Every server process: one, or each node of a cluster (`label` names it in logs).
        this.servers = servers;
        this.server = servers[0];
        this.redis = redis;
        this.web = web;
        this.browser = browser;
        this.log = log;
        this.screenshots = screenshots;
        this.frontend = frontend;
        this.proxies = [];
        this.pages = [];
        this.ttff = {};
    }

    // With `cluster` ({ nodes: [{ id, redis = true }], streamerNode, playerNode }): a redis-server
    // and one server per node on it; streamers connect to node `streamerNode`, players to node
    // `playerNode` (indexes into `nodes`). A node with `redis: false` runs alone (the break that
    // proves the cluster scenario can fail).
    static async start({ binary, serverArgs = [], web, log, screenshots, frontend, proxy, tls = null, cluster = null }) {
        // A STUN server on a closed loopback port: the pages must drop it (and would reach nothing).
        const args = ['--peer_options', '{"iceServers":[{"urls":["stun:127.0.0.1:9"]}]}', ...serverArgs];
        const servers = [];
        let redis = null;
        try {
            if (cluster) {
                redis = await startRedis();
                for (const node of cluster.nodes) {
                    const nodeArgs =
                        node.redis === false
                            ? []
                            : ['--redis_url', redis.url, '--node_id', node.id, ...CLUSTER_TIMING];
                    const server = await startServer(binary, [...args, ...nodeArgs], { tls });
                    server.label = `node ${node.id}`;
                    servers.push(server);
                }
            } else {
                const server = await startServer(binary, args, { tls });
                server.label = 'server';
                servers.push(server);
            }
        } catch (e) {
            for (const server of servers) await server.stop();
            if (redis) await redis.stop();
            throw e;
        }
        const browser = await launchBrowser({ tls: !!tls });
        const session = new Session({ servers, redis, web, browser, log, screenshots, frontend });
        const streamerSide = servers[cluster ? cluster.streamerNode : 0];
        const playerSide = servers[cluster ? cluster.playerNode : 0];
        session.tls = !!tls;
        session.streamerUrl = streamerSide.streamerUrl;
        session.playerUrl = playerSide.playerUrl;
        session.httpBase = playerSide.httpBase;
        if (proxy && proxy.streamer) {
            const p = await startFaultProxy(session.streamerUrl, { drop: proxy.streamer });
            session.proxies.push(p);
            session.streamerUrl = p.url;
        }
        if (proxy && proxy.player) {
            const p = await startFaultProxy(session.playerUrl, { drop: proxy.player });
            session.proxies.push(p);
            session.playerUrl = p.url;
        }
        return session;
    }

    dropped() {
        return this.proxies.flatMap((p) => p.dropped);
    }

    async stop() {
        await this.browser.close();
        for (const p of this.proxies) await p.close();
        const exits = [];
        for (const server of this.servers) exits.push([server.label, await server.stop()]);
        if (this.redis) await this.redis.stop();
        for (const [label, exit] of exits) check(exit.code === 0, 'server exits cleanly', `${label} exit ${JSON.stringify(exit)}`);
    }

    // Waits until a listStreamers on the players' server answers a list holding `id` (in a
    // cluster, once the players' node has heard of the streamer on the other node): a WebSocket of
    // our own asks again on each list without it, paced at 20 ms; bounded by `timeout`.
    // Returns how many times it asked.
    async waitListed(id, { timeout = 10000, check: name } = {}) {
        const what = `${id} in the streamerList of ${this.playerUrl}`;
        const ws = new WebSocket(this.playerUrl, { rejectUnauthorized: !this.tls });
        let asks = 0;
        let last = null;
        const ask = () => {
            asks += 1;
            ws.send(JSON.stringify({ type: 'listStreamers' }));
        };
        try {
            await new Promise((resolve, reject) => {
                const fail = (why) => reject(new CheckFailure(name || what, `${why} waiting for ${what}; asked ${asks} times, last list ${JSON.stringify(last)}`));
                const timer = setTimeout(() => fail(`timed out after ${timeout} ms`), timeout);
                ws.on('message', (data) => {
                    let m;
                    try {
                        m = JSON.parse(String(data));
                    } catch {
                        return;
                    }
                    if (m.type === 'config') ask();
                    else if (m.type === 'streamerList') {
                        last = m.ids;
                        if (Array.isArray(m.ids) && m.ids.includes(id)) {
                            clearTimeout(timer);
                            resolve();
                        } else setTimeout(ask, 20);
                    }
                });
                ws.on('error', (e) => {
                    clearTimeout(timer);
                    fail(`WebSocket error ${e.message}`);
                });
                ws.on('close', (code, reason) => {
                    clearTimeout(timer);
                    fail(`closed ${code} "${reason}"`);
                });
            });
        } finally {
            ws.removeAllListeners('close');
            ws.on('error', () => {});
            ws.close();
        }
        return asks;
    }

    async newPage(label) {
        const page = await this.browser.context.newPage();
        page.label = label;
        page.consoleLines = [];
        page.on('console', (m) => {
            page.consoleLines.push(m.text().split('\n')[0].slice(0, 300));
            if (page.consoleLines.length > 200) page.consoleLines.shift();
        });
        page.on('pageerror', (e) => page.consoleLines.push(`pageerror: ${e.message}`));
        this.pages.push(page);
        return page;
    }

    async openStreamer(id, colour) {
        const page = await this.newPage(`streamer ${id}`);
        const q = new URLSearchParams({ ws: this.streamerUrl, id, colour: hex(COLOURS[colour]) });
        await page.goto(`${this.web.base}/streamer.html?${q}`);
        await this.waitFor(page, (want) => window.streamer.state.committedId === want, id, {
            what: `streamer ${id} identified (endpointIdConfirm)`
        });
        return page;
    }

    // The server's own pages (src/http/pages/), served by the server itself. loopback.js goes in
    // as an init script, since we cannot add a script tag to them.
    async openServerPage(label, pathAndQuery) {
        const page = await this.newPage(label);
        await page.addInitScript({ path: LOOPBACK_JS });
        await page.goto(`${this.httpBase}${pathAndQuery}`);
        return page;
    }

    // The built-in demo streamer, identified as `id`.
    // `protocol: 'shifted'` makes it announce other input ids (streamer.js).
    async openBuiltinStreamer(id, { protocol } = {}) {
        const q = new URLSearchParams({ id });
        if (protocol) q.set('protocol', protocol);
        const page = await this.openServerPage(`built-in streamer ${id}`, `/signalling/streamer?${q}`);
        await this.waitFor(page, (want) => window.streamer && window.streamer.state.committedId === want, id, {
            what: `built-in streamer ${id} identified (endpointIdConfirm)`
        });
        return page;
    }

    // The built-in player at `path` (`/` or `/signalling/player?...`).
    async openBuiltinPlayer(label, path) {
        const page = await this.openServerPage(label, path);
        await this.waitFor(page, () => !!window.player, null, { what: `${label}: the built-in player loaded` });
        return page;
    }

    // Waits until the page decodes `frames` more frames than now, then 5 more, across which
    // presentedFrames must go up (it restarts with a new stream, so it is compared only after
    // the wait). `kind` is 'builtin' (our player page) or 'epic' (Epic's frontend page).
    async waitForFrames(page, kind, { frames = 20, timeout = 20000, check: name } = {}) {
        const read = (k) => {
            const f = k === 'epic' ? window.interop.state.frames : window.player.state.frames;
            return { count: f.count, presented: f.presented };
        };
        // Frames are counted as presented (requestVideoFrameCallback), which a tab behind another
        // does only slowly.
        await page.bringToFront();
        const waitCount = async (want) =>
            this.waitFor(
                page,
                ({ k, want }) => (k === 'epic' ? window.interop.state.frames : window.player.state.frames).count >= want,
                { k: kind, want },
                { what: `${page.label}: ${frames} more decoded frames`, timeout, check: name }
            );
        const before = await page.evaluate(read, kind);
        await waitCount(before.count + frames);
        const middle = await page.evaluate(read, kind);
        await waitCount(middle.count + 5);
        const after = await page.evaluate(read, kind);
        check(
            after.presented > middle.presented,
            name || `${page.label} video advances`,
            `presentedFrames ${middle.presented} → ${after.presented}`
        );
        return after;
    }

    async openPlayer(label, { streamerId, keepaliveMs, frontend = this.frontend } = {}) {
        const page = await this.newPage(label);
        const q = new URLSearchParams({ frontend, ss: this.playerUrl });
        if (streamerId) q.set('StreamerId', streamerId);
        if (keepaliveMs) q.set('KeepaliveDelay', String(keepaliveMs));
        await page.goto(`${this.web.base}/player.html?${q}`);
        await this.waitFor(page, () => !!window.interop, null, { what: `${label}: Epic's frontend loaded` });
        return page;
    }

    // Waits until fn(arg) is truthy in the page. On timeout, fails naming what was awaited.
    async waitFor(page, fn, arg, { what, timeout = 15000, check: name } = {}) {
        try {
            await page.waitForFunction(fn, arg, { timeout, polling: 100 });
        } catch (e) {
            if (!/Timeout/i.test(String(e && e.message))) throw e;
            const tail = page.consoleLines.slice(-8).map((l) => `    ${l}`).join('\n');
            throw new CheckFailure(
                name || what,
                `timed out after ${timeout} ms waiting for ${what} (${page.label}); last console lines:\n${tail}`
            );
        }
    }

    state(page) {
        return page.evaluate(() => window.interop.state);
    }

    // Waits until the player decodes advancing frames of the given streamer colour, frames counted
    // from `sinceCount`. Returns the player's state.
    async waitForVideo(page, colour, { frames = 20, sinceCount = 0, timeout = 20000, check: name } = {}) {
        const what = `${page.label}: ${frames} decoded frames with the moving ${colour} pattern`;
        await this.waitFor(
            page,
            ({ frames, sinceCount }) => {
                const f = window.interop.state.frames;
                const recent = f.samples.filter((s) => s.presented > 0 && s.barX !== null);
                return f.count >= sinceCount + frames && recent.length >= 3;
            },
            { frames, sinceCount },
            { what, timeout, check: name }
        );
        const state = await this.state(page);
        const samples = state.frames.samples.slice(-5);
        const colours = [...new Set(samples.map((s) => nearestColour(s.colour)))];
        check(
            colours.length === 1 && colours[0] === colour,
            name || `${page.label} shows the ${colour} streamer`,
            `decoded colours ${JSON.stringify(colours)}, samples ${JSON.stringify(samples)}`
        );
        const positions = new Set(samples.map((s) => s.barX));
        check(
            positions.size >= 2,
            name || `${page.label} video advances`,
            `the moving bar did not move across the last samples: ${JSON.stringify(samples)}`
        );
        const presented = samples.map((s) => s.presented);
        check(
            presented[presented.length - 1] > presented[0],
            name || `${page.label} video advances`,
            `presentedFrames did not increase: ${presented}`
        );
        return state;
    }

    // Media stays on this machine. Only 127.0.0.1 candidates are signalled, but Chromium also
    // checks from its other host sockets, so a selected pair is either
    //   <an address of this machine> → 127.0.0.1 (host), or
    //   127.0.0.1 → a peer-reflexive candidate: a peer that reached our 127.0.0.1 socket, which
    //   only a process on this machine can (Chromium hides that address from the page).
    async checkLoopback(page) {
        const { pairs, stats } = await page.evaluate(async () => ({
            pairs: await window.__loopback.selectedPairs(),
            stats: window.__loopback.stats
        }));
        const local = localAddresses();
        check(pairs.length > 0, `${page.label} media on loopback`, 'no selected candidate pair');
        const shown = [];
        for (const p of pairs) {
            const ok =
                (p.remote === '127.0.0.1' && p.remoteType === 'host' && local.has(p.local)) ||
                (p.local === '127.0.0.1' && p.remoteType === 'prflx');
            const text = `${p.local} → ${p.remote || 'hidden'} (${p.remoteType})`;
            check(ok, `${page.label} media on loopback`, `selected pair ${text} is not local`);
            shown.push(text);
        }
        check(
            stats.droppedIceServers > 0 && stats.keptRemote > 0,
            `${page.label} drops STUN/TURN servers`,
            `loopback stats ${JSON.stringify(stats)}`
        );
        return shown;
    }

    async screenshot(page, name) {
        await mkdir(this.screenshots, { recursive: true });
        const file = path.join(this.screenshots, `${name}.png`);
        await page.screenshot({ path: file });
        return file;
    }

    // The id the server gave this player, as the frontend learnt it from the offer's playerId.
    async playerId(page) {
        return page.evaluate(() => window.interop.state.ws.playerId);
    }
}
