// A WebSocket man-in-the-middle for the self-check: relays every connection to the upstream port
// of our server, message by message, except the JSON messages whose `type` is in `drop` on their
// way from the server to the client. It proves the suite's checks can fail.
import { WebSocketServer, WebSocket } from 'ws';

export async function startFaultProxy(upstreamUrl, { drop = [] } = {}) {
    const dropTypes = new Set(drop);
    const dropped = [];
    const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise((resolve) => server.once('listening', resolve));

    server.on('connection', (client, request) => {
        const protocols = request.headers['sec-websocket-protocol'];
        const upstream = new WebSocket(
            upstreamUrl + request.url,
            protocols ? protocols.split(',').map((p) => p.trim()) : []
        );
        const pending = [];
        upstream.on('open', () => {
            for (const [data, isBinary] of pending) upstream.send(data, { binary: isBinary });
            pending.length = 0;
        });
        client.on('message', (data, isBinary) => {
            if (upstream.readyState === WebSocket.OPEN) upstream.send(data, { binary: isBinary });
            else pending.push([data, isBinary]);
        });
        upstream.on('message', (data, isBinary) => {
            let type;
            try {
                type = JSON.parse(data.toString()).type;
            } catch {
                type = undefined;
            }
            if (dropTypes.has(type)) {
                dropped.push(type);
                return;
            }
            if (client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
        });
        // Close codes 1005/1006 cannot be sent; pass the others on.
        const relayClose = (to) => (code, reason) => {
            const sendable = code >= 1000 && code !== 1005 && code !== 1006 && code < 5000;
            if (to.readyState === WebSocket.OPEN || to.readyState === WebSocket.CONNECTING) {
                if (sendable) to.close(code, reason);
                else to.terminate();
            }
        };
        client.on('close', relayClose(upstream));
        upstream.on('close', relayClose(client));
        client.on('error', () => upstream.terminate());
        upstream.on('error', () => client.terminate());
    });

    return {
        url: `ws://127.0.0.1:${server.address().port}`,
        dropped,
        close: () =>
            new Promise((resolve) => {
                for (const c of server.clients) c.terminate();
                server.close(resolve);
            })
    };
}
