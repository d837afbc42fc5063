// Starts our signalling binary on ephemeral loopback ports, reads the ports back from its log, and
// stops it (SIGTERM, then SIGKILL after 5 s). With `tls` ({ cert, key }: PEM paths) players use
// HTTPS/WSS on the HTTPS port and streamers WSS; the plain player port is then not opened.
import { spawn } from 'node:child_process';

const LISTENING = /(streamer|player|SFU|HTTPS) port listening on 127\.0\.0\.1:(\d+)/;

export async function startServer(binary, extraArgs = [], { timeoutMs = 10000, tls = null } = {}) {
    const tlsArgs = tls
        ? ['--https', '--https_port', '0', '--ssl_cert_path', tls.cert, '--ssl_key_path', tls.key, '--streamer_tls', '--sfu_tls']
        : [];
    // The ports to wait for: with TLS the player side is the HTTPS port.
    const needed = tls ? ['streamer', 'HTTPS', 'SFU'] : ['streamer', 'player', 'SFU'];
    const args = [
        '--bind_address', '127.0.0.1',
        '--streamer_port', '0',
        '--player_port', '0',
        '--sfu_port', '0',
        '--log_level', 'info',
        ...tlsArgs,
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
            () => reject(new Error(`server did not report its ${needed.join(', ')} ports within ${timeoutMs} ms:\n${log.join('\n')}`)),
            timeoutMs
        );
        const onLine = (line) => {
            log.push(line);
            const m = LISTENING.exec(line);
            if (m) ports[m[1]] = Number(m[2]);
            if (needed.every((role) => ports[role])) {
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
    const playerPort = tls ? ports.HTTPS : ports.player;
    return {
        streamerUrl: `${tls ? 'wss' : 'ws'}://127.0.0.1:${ports.streamer}`,
        playerUrl: `${tls ? 'wss' : 'ws'}://127.0.0.1:${playerPort}`,
        // Where the server's own pages are (the built-in player and streamer).
        httpBase: `${tls ? 'https' : 'http'}://127.0.0.1:${playerPort}`,
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
