// Two headless Chromium pages follow the session API flow step by step and connect over WebRTC
// forced through a TURN relay (iceTransportPolicy "relay"):
//   GET /iceServers → POST /register → EventSource /events → offer / answer / ice-candidate via
//   POST /message → connectionState "connected" → a data channel message each way → DELETE.
// The pages are served from their own small HTTP server, so every call to the signalling
// server is cross-origin (CORS and preflight are exercised too).
//
// Env: SIGNALLING_URL (http://127.0.0.1:PORT of the player port), CHROMIUM (default
// /usr/bin/chromium). Prints "sessions-browser: ok" and exits 0 on success; exits 1 with the
// reason otherwise.

import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = process.env.SIGNALLING_URL;
if (!base) {
  console.error("SIGNALLING_URL is not set");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const session = `browser-${process.pid}`;
const STEP_TIMEOUT_MS = 20000;

// The page: nothing but an origin for the script to run in.
const pages = createServer((_req, res) => {
  res.writeHead(200, { "content-type": "text/html" });
  res.end("<!doctype html><title>session peer</title>");
});
await new Promise((resolve) => pages.listen(0, "127.0.0.1", resolve));
const pageUrl = `http://127.0.0.1:${pages.address().port}/`;

// Runs in each page. Returns a log of steps and what the data channel received.
async function peer({ base, session, me, other, caller, timeoutMs }) {
  const log = [];
  const step = (s) => log.push(s);
  const fail = (why) => {
    throw new Error(`${me}: ${why}; steps: ${log.join(" → ")}`);
  };
  const withTimeout = (promise, what) =>
    Promise.race([
      promise,
      new Promise((_, reject) =>
        setTimeout(() => reject(new Error(`${me}: timed out waiting for ${what}; steps: ${log.join(" → ")}`)), timeoutMs),
      ),
    ]);
  const api = async (method, path, body) => {
    const res = await fetch(base + path, {
      method,
      headers: body ? { "content-type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    const json = await res.json();
    if (res.status !== 200) fail(`${method} ${path} answered ${res.status} ${JSON.stringify(json)}`);
    return json;
  };

  // 1. ICE servers (with fresh TURN credentials for this peer).
  const ice = await api("GET", `/iceServers?peerId=${me}`);
  if (!ice.username || !ice.credential || ice.credentials !== ice.credential) fail(`no TURN credentials: ${JSON.stringify(ice)}`);
  step("iceServers");

  // 2. Register.
  const reg = await api("POST", `/register/${session}/${me}`);
  if (reg.message !== "session registered successfully") fail(`register said ${JSON.stringify(reg)}`);
  step("registered");

  // 3. Events. Everything that arrives is queued and handled in order.
  const events = [];
  // Everyone waiting for an event is woken by each arrival and looks for its own type.
  const waiters = new Set();
  const source = new EventSource(`${base}/events/${session}/${me}`);
  source.onmessage = (e) => {
    events.push(JSON.parse(e.data));
    for (const wake of waiters) wake();
    waiters.clear();
  };
  await withTimeout(new Promise((resolve) => (source.onopen = resolve)), "the event stream to open");
  step("events open");
  if (caller) await window.callerReady();
  const nextEvent = async (type, deadline = true) => {
    for (;;) {
      const i = events.findIndex((e) => e.type === type);
      if (i >= 0) return events.splice(i, 1)[0];
      const arrival = new Promise((resolve) => waiters.add(resolve));
      await (deadline ? withTimeout(arrival, `a ${type} event`) : arrival);
    }
  };

  const pc = new RTCPeerConnection({
    iceServers: [{ urls: ice.urls, username: ice.username, credential: ice.credential }],
    iceTransportPolicy: "relay",
  });
  const send = (type, payload) => api("POST", `/message/${session}/${me}`, { target: other, type, payload });
  pc.onicecandidate = (e) => {
    if (e.candidate) {
      if (!/ typ relay /.test(e.candidate.candidate)) fail(`non-relay candidate ${e.candidate.candidate}`);
      send("ice-candidate", e.candidate.toJSON()).catch(() => {});
    }
  };
  // Candidates may arrive before the remote description: add them once it is set.
  let remoteSet = false;
  const pending = [];
  const candidates = (async () => {
    for (;;) {
      const e = await nextEvent("ice-candidate", false);
      if (e.senderId !== other) fail(`candidate from ${e.senderId}`);
      if (remoteSet) await pc.addIceCandidate(e.payload);
      else pending.push(e.payload);
    }
  })();
  const setRemote = async (description) => {
    await pc.setRemoteDescription(description);
    remoteSet = true;
    for (const c of pending.splice(0)) await pc.addIceCandidate(c);
  };

  // The handler goes on as soon as the channel exists: the other side may send before this
  // side has seen "connected", and a message with no handler is gone.
  let gotMessage;
  const received = new Promise((resolve) => (gotMessage = resolve));
  const listen = (channel) => {
    channel.onmessage = (e) => gotMessage(e.data);
    return channel;
  };
  let channel;
  if (caller) {
    // 4a. The caller waits for the callee, then offers.
    const joined = await nextEvent("new-peer");
    if (joined.senderId !== other) fail(`new-peer from ${joined.senderId}`);
    step("new-peer");
    channel = listen(pc.createDataChannel("chat"));
    await pc.setLocalDescription(await pc.createOffer());
    await send("offer", pc.localDescription.toJSON());
    step("offer sent");
    const answer = await nextEvent("answer");
    await setRemote(answer.payload);
    step("answer set");
  } else {
    // 4b. The callee answers the offer (which may have been queued before its stream opened).
    const channelOpened = new Promise((resolve) => (pc.ondatachannel = (e) => resolve(listen(e.channel))));
    const offer = await nextEvent("offer");
    if (offer.senderId !== other || offer.payload.type !== "offer") fail(`bad offer ${JSON.stringify(offer)}`);
    await setRemote(offer.payload);
    await pc.setLocalDescription(await pc.createAnswer());
    await send("answer", pc.localDescription.toJSON());
    step("answer sent");
    channel = await withTimeout(channelOpened, "the data channel");
  }

  // 5. Connected, through the relay.
  await withTimeout(
    new Promise((resolve, reject) => {
      const check = () => {
        if (pc.connectionState === "connected") resolve();
        if (pc.connectionState === "failed") reject(new Error(`${me}: connection failed; steps: ${log.join(" → ")}`));
      };
      pc.onconnectionstatechange = check;
      check();
    }),
    'connectionState "connected"',
  );
  step("connected");
  const stats = await pc.getStats();
  let pair = null;
  stats.forEach((r) => {
    if (r.type === "transport" && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId);
  });
  if (!pair) stats.forEach((r) => { if (r.type === "candidate-pair" && r.state === "succeeded") pair = r; });
  const local = pair && stats.get(pair.localCandidateId);
  if (!local || local.candidateType !== "relay") fail(`selected local candidate is ${local && local.candidateType}`);
  step("relay pair");

  // 6. One message each way on the data channel.
  if (channel.readyState !== "open") {
    await withTimeout(new Promise((resolve) => (channel.onopen = resolve)), "the data channel to open");
  }
  channel.send(`hello from ${me}`);
  const got = await withTimeout(received, "a data channel message");
  step(`received "${got}"`);

  // 7. Streams closed, leave.
  source.close();
  await api("DELETE", `/register/${session}/${me}`);
  step("left");
  pc.close();
  void candidates;
  return { log, got };
}

const withDeadline = (promise, what) =>
  Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), STEP_TIMEOUT_MS)),
  ]);

const userDataDir = mkdtempSync(join(tmpdir(), "sessions-browser-"));
let context;
let code = 1;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--allow-loopback-in-peer-connection",
    ],
  });
  const [a, b] = [await context.newPage(), await context.newPage()];
  let signalReady;
  const callerReady = new Promise((resolve) => (signalReady = resolve));
  await a.exposeFunction("callerReady", () => signalReady());
  for (const [name, page] of [["caller", a], ["callee", b]]) {
    page.on("console", (m) => console.log(`[${name}] ${m.text()}`));
    page.on("pageerror", (e) => console.log(`[${name}] page error: ${e.message}`));
    await page.goto(pageUrl);
  }
  const args = { base, session, timeoutMs: STEP_TIMEOUT_MS };
  // The caller registers first, so the callee's registration reaches it as new-peer.
  const callerDone = a.evaluate(peer, { ...args, me: "caller", other: "callee", caller: true });
  // The caller's failure before that point ends the wait too.
  await withDeadline(Promise.race([callerReady, callerDone]), "the caller to register and open its stream");
  const callee = await b.evaluate(peer, { ...args, me: "callee", other: "caller", caller: false });
  const caller = await callerDone;
  console.log(`caller: ${caller.log.join(" → ")}`);
  console.log(`callee: ${callee.log.join(" → ")}`);
  if (caller.got !== "hello from callee" || callee.got !== "hello from caller") {
    throw new Error(`data channel messages: caller got ${caller.got}, callee got ${callee.got}`);
  }
  console.log("sessions-browser: ok");
  code = 0;
} catch (e) {
  console.error(`sessions-browser: FAILED: ${e && e.stack ? e.stack : e}`);
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
  pages.close();
}
process.exit(code);
