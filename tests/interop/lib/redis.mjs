// A redis-server of its own for the cluster scenario: a free 127.0.0.1 port, nothing persisted
// (as tests/integration/support/redis.rs starts one), ready once it logs "Ready to accept
// connections". tests/redis/setup.sh installs it (Debian's redis-server).
import { spawn } from 'node:child_process';
import net from 'node:net';
import os from 'node:os';

const READY = /Ready to accept connections/;
// Ports tried when another process takes the free port between our probe and redis-server's bind.
const ATTEMPTS = 5;

// A port nothing listens on right now: the OS's pick for 127.0.0.1:0.
function freePort() {
    return new Promise((resolve, reject) => {
        const probe = net.createServer();
        probe.once('error', reject);
        probe.listen(0, '127.0.0.1', () => {
            const { port } = probe.address();
            probe.close(() => resolve(port));
        });
    });
}

function spawnOn(port, timeoutMs) {
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'];
    args.push('--daemonize', 'no', '--loglevel', 'notice', '--dir', os.tmpdir());
    const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const killOnExit = () => child.kill('SIGKILL');
    process.once('exit', killOnExit);
    const log = [];
    let exited = null;
    const ready = new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`redis-server on port ${port} not ready within ${timeoutMs} ms:\n${log.join('\n')}`)), timeoutMs);
        for (const stream of [child.stdout, child.stderr]) {
            stream.setEncoding('utf8');
            let buffered = '';
            stream.on('data', (chunk) => {
                buffered += chunk;
                let i;
                while ((i = buffered.indexOf('\n')) >= 0) {
                    const line = buffered.slice(0, i);
                    buffered = buffered.slice(i + 1);
                    log.push(line);
                    if (READY.test(line)) {
                        clearTimeout(timer);
                        resolve();
                    }
                }
            });
        }
        child.on('error', (e) => {
            clearTimeout(timer);
            reject(
                e.code === 'ENOENT'
                    ? new Error('redis-server is not installed: run tests/redis/setup.sh (Debian\'s redis-server)')
                    : new Error(`cannot start redis-server: ${e.message}`)
            );
        });
        child.on('exit', (code, signal) => {
            exited = { code, signal };
            process.removeListener('exit', killOnExit);
            clearTimeout(timer);
            reject(new Error(`redis-server on port ${port} exited (${code ?? signal}):\n${log.join('\n')}`));
        });
    });
    return {
        ready,
        handle: {
            url: `redis://127.0.0.1:${port}`,
            log,
            async stop() {
                if (exited) return;
                const done = new Promise((resolve) => child.once('exit', resolve));
                child.kill('SIGKILL');
                await done;
            }
        }
    };
}

export async function startRedis({ timeoutMs = 10000 } = {}) {
    let last = null;
    for (let i = 0; i < ATTEMPTS; i += 1) {
        const { ready, handle } = spawnOn(await freePort(), timeoutMs);
        try {
            await ready;
            return handle;
        } catch (e) {
            if (/not installed/.test(e.message)) throw e;
            last = e;
            await handle.stop();
        }
    }
    throw new Error(`redis-server did not start in ${ATTEMPTS} attempts: ${last && last.message}`);
}
