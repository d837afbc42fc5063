#!/usr/bin/env node
// The interop suite: real Pixel Streaming clients through our signalling server in headless
// Chromium. Epic's frontend (npm, bundled with esbuild) plays; our streamer page streams a canvas.
//
//   node tests/interop/run.mjs --server PATH [--scenario NAME ...] [--screenshots DIR] [--verbose]
//                              [--tls-cert PATH --tls-key PATH]
//
// NAME is a scenario of lib/scenarios.mjs, `self-check` (the fault-proxy runs and a cluster
// break, which must fail on the matching check), or `all` (the default: every scenario, then the self-check). Each scenario
// starts its own server on ephemeral loopback ports and its own Chromium, and stops both.
// Prints one line per scenario with its time to first frame; exits 0 if all passed, 1 if a check
// failed, 2 on a usage or setup error. With --tls-cert/--tls-key (PEM) the server runs with
// --https --https_port 0 --streamer_tls --sfu_tls and that certificate: players use https/wss,
// streamers wss, and Chromium accepts the (self-signed) certificate. A watchdog ends the run after WATCHDOG_S (default 300) s.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

function usage(message) {
    console.error(`run.mjs: ${message}`);
    console.error('usage: node run.mjs --server PATH [--scenario NAME ...] [--screenshots DIR] [--verbose] [--tls-cert PATH --tls-key PATH]');
    process.exit(2);
}

const args = { scenarios: [], screenshots: path.join(here, 'screenshots'), verbose: false, server: null, tlsCert: null, tlsKey: null };
for (let i = 2; i < process.argv.length; i += 1) {
    const a = process.argv[i];
    const value = () => process.argv[++i] ?? usage(`${a} needs a value`);
    if (a === '--server') args.server = value();
    else if (a === '--scenario') args.scenarios.push(value());
    else if (a === '--screenshots') args.screenshots = path.resolve(value());
    else if (a === '--verbose') args.verbose = true;
    else if (a === '--tls-cert') args.tlsCert = path.resolve(value());
    else if (a === '--tls-key') args.tlsKey = path.resolve(value());
    else usage(`unknown argument ${a}`);
}
if (!args.server) usage('--server PATH (the signalling binary) is required');
if (!existsSync(args.server)) usage(`no server binary at ${args.server}`);
if (!args.tlsCert !== !args.tlsKey) usage('--tls-cert and --tls-key go together');
for (const f of [args.tlsCert, args.tlsKey]) if (f && !existsSync(f)) usage(`no file at ${f}`);
const tls = args.tlsCert ? { cert: args.tlsCert, key: args.tlsKey } : null;
if (!existsSync(path.join(here, 'node_modules'))) {
    console.error(`run.mjs: ${path.join(here, 'node_modules')} is missing: run tests/interop/setup.sh`);
    process.exit(2);
}

const { SCENARIOS, FAULTS, CONTROL, CheckFailure } = await import('./lib/scenarios.mjs');
const { Session } = await import('./lib/harness.mjs');
const { startWeb } = await import('./lib/web.mjs');

let names = args.scenarios.length ? args.scenarios : ['all'];
if (names.includes('all')) names = [...Object.keys(SCENARIOS), 'self-check'];
for (const n of names) if (n !== 'self-check' && !SCENARIOS[n]) usage(`unknown scenario ${n}; one of ${Object.keys(SCENARIOS).join(', ')}, self-check, all`);

const watchdogS = Number(process.env.WATCHDOG_S || 300);
setTimeout(() => {
    console.error(`run.mjs: watchdog: still running after ${watchdogS} s`);
    process.exit(1);
}, watchdogS * 1000).unref();

const log = (line) => console.log(line);
// Summary lines go to stderr as well: the Rust test shows stderr live, even for passing tests.
const summary = (line) => {
    console.log(line);
    console.error(line);
};

const web = await startWeb(['ue5.7', 'ue5.6', 'ue5.5']);

// `cluster` replaces the scenario's own cluster layout (a self-check's break).
async function runScenario(name, { proxy, cluster, expectFailure = false } = {}) {
    const def = SCENARIOS[name];
    const started = Date.now();
    const session = await Session.start({
        binary: args.server,
        serverArgs: def.serverArgs || [],
        web,
        log,
        screenshots: args.screenshots,
        frontend: def.frontend || 'ue5.7',
        proxy,
        tls,
        cluster: cluster || def.cluster
    });
    try {
        const result = await def.run(session);
        await session.stop();
        return { ...result, ms: Date.now() - started, dropped: session.dropped() };
    } catch (e) {
        // The pages' consoles and the server's log explain a failure (stdout is shown on failure).
        if (args.verbose || !expectFailure) {
            for (const p of session.pages) {
                if (p.isClosed()) continue;
                log(`--- console of ${p.label}`);
                for (const l of p.consoleLines.slice(-30)) log(`    ${l}`);
            }
            for (const server of session.servers) log(`--- ${server.label} log\n${server.log.slice(-30).join('\n')}`);
        }
        e.dropped = session.dropped();
        await session.stop().catch(() => {});
        throw e;
    }
}

const formatTtff = (ttff) =>
    Object.entries(ttff)
        .map(([k, v]) => `${k} ${v} ms`)
        .join(', ');

let failed = 0;
const suiteStart = Date.now();
log(`screenshots: ${args.screenshots}`);
for (const name of names) {
    if (name === 'self-check') {
        const control = `self-check control (${CONTROL.scenario} through the proxy, nothing dropped)`;
        try {
            await runScenario(CONTROL.scenario, { proxy: CONTROL.proxy });
            summary(`ok - ${control}: passed`);
        } catch (e) {
            failed += 1;
            summary(`not ok - ${control}: ${e.message}`);
        }
        for (const fault of FAULTS) {
            const label = `self-check (${fault.scenario}, ${fault.what})`;
            try {
                await runScenario(fault.scenario, { proxy: fault.proxy, cluster: fault.cluster, expectFailure: true });
                failed += 1;
                summary(`not ok - ${label}: the scenario PASSED although ${fault.what}`);
            } catch (e) {
                // A proxy fault must have dropped something; a cluster break drops nothing.
                if (e instanceof CheckFailure && e.check === fault.expect && (!fault.proxy || e.dropped.length > 0)) {
                    const how = fault.proxy ? `${e.dropped.length} dropped` : 'nothing dropped: a cluster break';
                    summary(`ok - ${label}: failed as it must, on "${e.check}" (${how})`);
                    log(`    ${e.message.split('\n')[0]}`);
                } else {
                    failed += 1;
                    summary(`not ok - ${label}: expected check "${fault.expect}" to fail, got: ${e.message}`);
                }
            }
        }
        continue;
    }
    const def = SCENARIOS[name];
    try {
        const r = await runScenario(name);
        summary(`ok - ${def.title}: time to first frame ${formatTtff(r.ttff)} (${(r.ms / 1000).toFixed(1)} s)`);
        for (const n of r.notes) log(`    ${n}`);
    } catch (e) {
        failed += 1;
        summary(`not ok - ${def.title}: ${e.message}`);
        if (!(e instanceof CheckFailure)) log(e.stack);
    }
}
await web.close();
summary(`interop: ${failed === 0 ? 'all passed' : `${failed} failed`} in ${((Date.now() - suiteStart) / 1000).toFixed(1)} s; screenshots in ${args.screenshots}`);
process.exit(failed === 0 ? 0 : 1);
