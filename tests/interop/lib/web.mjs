// Serves the pages on 127.0.0.1: the streamer page and loopback.js as they are, and the player page
// with Epic's frontend bundled by esbuild, one bundle per frontend version (npm aliases).
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));
const pagesDir = path.join(here, '..', 'pages');

// Package of each frontend version, as named in package.json.
export const FRONTENDS = {
    'ue5.7': '@epicgames-ps/lib-pixelstreamingfrontend-ue5.7',
    'ue5.6': 'frontend-ue5.6',
    'ue5.5': 'frontend-ue5.5'
};

export async function bundlePlayer(version) {
    const pkg = FRONTENDS[version];
    if (!pkg) throw new Error(`unknown frontend ${version}; one of ${Object.keys(FRONTENDS).join(', ')}`);
    const result = await esbuild.build({
        entryPoints: [path.join(pagesDir, 'player-entry.js')],
        bundle: true,
        write: false,
        format: 'iife',
        target: 'chrome110',
        logLevel: 'silent',
        alias: pkg === FRONTENDS['ue5.7'] ? {} : { [FRONTENDS['ue5.7']]: pkg },
        // Resolve packages from this suite's node_modules whatever the cwd.
        nodePaths: [path.join(here, '..', 'node_modules')]
    });
    return result.outputFiles[0].text;
}

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8' };

export async function startWeb(versions) {
    const bundles = {};
    for (const v of versions) bundles[`/player-${v}.js`] = await bundlePlayer(v);
    const server = http.createServer(async (req, res) => {
        const pathname = new URL(req.url, 'http://x').pathname;
        try {
            let body = bundles[pathname];
            if (body === undefined) {
                const name = path.basename(pathname);
                if (name === 'favicon.ico') {
                    res.writeHead(204).end();
                    return;
                }
                if (!['streamer.html', 'streamer.js', 'loopback.js', 'player.html'].includes(name)) {
                    res.writeHead(404).end();
                    return;
                }
                body = await readFile(path.join(pagesDir, name));
            }
            res.writeHead(200, { 'content-type': TYPES[path.extname(pathname)] || 'application/octet-stream' });
            res.end(body);
        } catch (e) {
            res.writeHead(500).end(String(e));
        }
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${server.address().port}`;
    return { base, close: () => new Promise((resolve) => server.close(resolve)) };
}
