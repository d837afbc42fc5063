// Launches Debian's Chromium through playwright-core: headless, off the network, with a fresh
// profile, loopback WebRTC allowed and mDNS obfuscation of host candidates off.
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.INTEROP_CHROMIUM || '/usr/bin/chromium';

// Playwright passes its own --disable-features list; Chromium keeps only the last such switch,
// so ours repeats the ones that matter and adds WebRtcHideLocalIpsWithMdns.
const DISABLED_FEATURES = [
    'WebRtcHideLocalIpsWithMdns',
    'AvoidUnnecessaryBeforeUnloadCheckSync',
    'DestroyProfileOnBrowserClose',
    'MediaRouter',
    'PaintHolding',
    'OptimizationHints',
    'NetworkTimeServiceQuerying',
    'PreconnectToSearch',
    'AimEnabled',
    'Translate'
];

export const CHROMIUM_ARGS = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-default-apps',
    '--disable-domain-reliability',
    '--disable-client-side-phishing-detection',
    '--no-pings',
    '--allow-loopback-in-peer-connection',
    '--autoplay-policy=no-user-gesture-required',
    '--disable-background-timer-throttling',
    '--disable-renderer-backgrounding',
    '--disable-backgrounding-occluded-windows',
    `--disable-features=${DISABLED_FEATURES.join(',')}`
];

// With `tls`, the server's self-signed certificate is accepted.
export async function launchBrowser({ tls = false } = {}) {
    if (!existsSync(CHROMIUM)) {
        throw new Error(`${CHROMIUM} not found: run tests/interop/setup.sh (it installs Debian's chromium)`);
    }
    const profile = await mkdtemp(path.join(os.tmpdir(), 'interop-chromium-'));
    const context = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM,
        headless: true,
        args: tls ? [...CHROMIUM_ARGS, '--ignore-certificate-errors'] : CHROMIUM_ARGS,
        ignoreHTTPSErrors: tls,
        viewport: { width: 660, height: 380 },
        // Chromium gathers candidates on interfaces other than the default route (here: loopback)
        // only for pages holding a media permission. No device is opened.
        permissions: ['camera', 'microphone'],
        timeout: 30000
    });
    return {
        context,
        async close() {
            await context.close().catch(() => {});
            await rm(profile, { recursive: true, force: true }).catch(() => {});
        }
    };
}
