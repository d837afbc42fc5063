// Starts our signalling binary on ephemeral loopback ports, reads the ports back from its log, and
// stops it (SIGTERM, then SIGKILL after 5 s).
import { spawn } from 'node:child_process';

const LISTENING = /(streamer|player|SFU) port listening on 127\.0\.0\.1:(\d+)/;

export async function startServer(binary, extraArgs = [], { timeoutMs = 10000 } = {}) {
    const args = [
        '--bind_address', '127.0.0.1',
        '--streamer_port', '0',
        '--player_port', '0',
        '--sfu_port', '0',
        '--log_level', 'info',
        ...extraArgs
    ];
    const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    // Never leave a server behind, whatever way this process ends.
    const killOnExit = () => child.kill('SIGKILL');
    process.once('exit', killOnExit);
    const log = [];
    const ports = {};
    let exited = null;
    const ready = new Promise((resolve, reject) => {
        const timer = setTimeout(
            () => reject(new Error(`server did not report its three ports within ${timeoutMs} ms:\n${log.join('\n')}`)),
            timeoutMs
        );
        const onLine = (line) => {
            log.push(line);
            const m = LISTENING.exec(line);
            if (m) ports[m[1]] = Number(m[2]);
            if (ports.streamer && ports.player && ports.SFU) {
                clearTimeout(timer);
                resolve();
            }
        };
        for (const stream of [child.stdout, child.stderr]) {
            let buffered = '';
            stream.setEncoding('utf8');
            stream.on('data', (chunk) => {
                buffered += chunk;
                let i;
                while ((i = buffered.indexOf('\n')) >= 0) {
                    onLine(buffered.slice(0, i));
                    buffered = buffered.slice(i + 1);
                }
            });
        }
        child.on('error', (e) => {
            clearTimeout(timer);
            reject(new Error(`cannot start ${binary}: ${e.message}`));
        });
        child.on('exit', (code, signal) => {
            exited = { code, signal };
            process.removeListener('exit', killOnExit);
            clearTimeout(timer);
            reject(new Error(`server exited early (${code ?? signal}):\n${log.join('\n')}`));
        });
    });
    await ready;
    return {
        streamerUrl: `ws://127.0.0.1:${ports.streamer}`,
        playerUrl: `ws://127.0.0.1:${ports.player}`,
        log,
        async stop() {
            if (exited) return exited;
            const done = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
            child.kill('SIGTERM');
            const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
            const result = await done;
            clearTimeout(timer);
            return result;
        }
    };
}
