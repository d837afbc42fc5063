// Keeps every WebRTC connection of this page on 127.0.0.1, whatever the page's own code does.
// Loaded before the page's scripts (the streamer page and Epic's frontend alike). It replaces
// window.RTCPeerConnection with a subclass that
//   - drops every STUN/TURN server from the configuration it is given (so nothing is contacted),
//   - signals only host candidates on 127.0.0.1 (other local candidates are never handed to the
//     page's onicecandidate handler) and accepts only those from the remote side,
//   - keeps a list of its connections, so the test can read the selected candidate pair.
// Chromium runs with --allow-loopback-in-peer-connection and a camera/microphone grant (without
// both it gathers no 127.0.0.1 candidate) and without mDNS obfuscation (host candidates carry
// real addresses).
(() => {
    'use strict';
    const Native = window.RTCPeerConnection;
    const stats = { droppedIceServers: 0, droppedLocal: 0, droppedRemote: 0, keptLocal: 0, keptRemote: 0 };
    const connections = [];

    // "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host ..." → UDP, 127.0.0.1, typ host?
    function isLoopbackHost(candidate) {
        const text = typeof candidate === 'string' ? candidate : candidate && candidate.candidate;
        if (!text) return true; // end-of-candidates marker
        const fields = text.replace(/^a=/, '').split(' ');
        return fields[2].toLowerCase() === 'udp' && fields[4] === '127.0.0.1' && fields[6] === 'typ' && fields[7] === 'host';
    }

    function loopbackOnlySdp(sdp) {
        return sdp
            .split('\r\n')
            .filter((line) => !line.startsWith('a=candidate:') || isLoopbackHost(line))
            .join('\r\n');
    }

    class LoopbackPeerConnection extends Native {
        constructor(config, ...rest) {
            const servers = (config && config.iceServers) || [];
            stats.droppedIceServers += servers.length;
            super({ ...(config || {}), iceServers: [] }, ...rest);
            this._onicecandidate = null;
            super.addEventListener('icecandidate', (event) => {
                if (!isLoopbackHost(event.candidate)) {
                    stats.droppedLocal += 1;
                    return;
                }
                if (event.candidate) stats.keptLocal += 1;
                if (this._onicecandidate) this._onicecandidate.call(this, event);
            });
            connections.push(this);
        }

        get onicecandidate() {
            return this._onicecandidate;
        }

        set onicecandidate(handler) {
            this._onicecandidate = handler;
        }

        addEventListener(type, listener, options) {
            if (type !== 'icecandidate') return super.addEventListener(type, listener, options);
            return super.addEventListener(
                type,
                (event) => {
                    if (isLoopbackHost(event.candidate)) {
                        if (typeof listener === 'function') listener.call(this, event);
                        else listener.handleEvent(event);
                    }
                },
                options
            );
        }

        addIceCandidate(candidate, ...rest) {
            if (!isLoopbackHost(candidate)) {
                stats.droppedRemote += 1;
                return Promise.resolve();
            }
            if (candidate && candidate.candidate) stats.keptRemote += 1;
            return super.addIceCandidate(candidate, ...rest);
        }

        setRemoteDescription(description, ...rest) {
            if (description && description.sdp) {
                description = { type: description.type, sdp: loopbackOnlySdp(description.sdp) };
            }
            return super.setRemoteDescription(description, ...rest);
        }
    }

    window.RTCPeerConnection = LoopbackPeerConnection;

    // Every open connection's selected candidate pair: addresses and candidate types of both ends.
    // (Chromium hides the address of a peer-reflexive remote candidate: it is null then.)
    async function selectedPairs() {
        const pairs = [];
        for (const pc of connections) {
            if (pc.connectionState === 'closed') continue;
            const report = await pc.getStats();
            let pairId = null;
            report.forEach((s) => {
                if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
            });
            const pair = pairId && report.get(pairId);
            if (!pair) continue;
            const local = report.get(pair.localCandidateId) || {};
            const remote = report.get(pair.remoteCandidateId) || {};
            pairs.push({
                local: local.address || null,
                localType: local.candidateType,
                remote: remote.address || null,
                remoteType: remote.candidateType
            });
        }
        return pairs;
    }

    window.__loopback = { stats, connections, selectedPairs };
})();
