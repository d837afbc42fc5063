//! An incoming-stream adapter that cuts every large WebSocket data frame from a client into
//! frames of at most [`PIECE`] payload bytes before tungstenite reads them.
//!
//! Why: tungstenite 0.30 reserves room for a whole frame in its read buffer and keeps that
//! allocation for the life of the connection, so one 1 MiB message left a connection holding
//! 1 MiB forever (issue 10). Fragmented, a large message is assembled in a buffer that is freed
//! once the message is complete, and the read buffer stays near its 2 KiB. No crate does this;
//! it is a header rewrite, so it is written here.
//!
//! How: RFC 6455 §5.4 lets any data frame be split into fragments (the first keeps the opcode,
//! the rest are continuations, only the last keeps FIN). A client frame is masked with a 4-byte
//! key applied by payload offset; [`PIECE`] is a multiple of 4, so every piece keeps the same key
//! and the payload bytes pass through unchanged. Control frames, small frames and unmasked frames
//! (which tungstenite refuses) pass through untouched, as does everything before the end of the
//! HTTP request head when the adapter starts in HTTP mode.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest payload of a frame tungstenite is handed: its read buffer's size (see
/// `ConnectionSettings::websocket_config`), and a multiple of 4 (the mask).
pub const PIECE: usize = 2048;

/// Where in the incoming byte stream the adapter is.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Before the end of the HTTP request head; `matched` bytes of "\r\n\r\n" seen.
    Http { matched: usize },
    /// Gathering a frame header (2 to 14 bytes).
    Header,
    /// Copying `remaining` payload bytes of a frame passed through whole.
    Pass { remaining: u64 },
    /// Cutting a frame: `remaining` payload bytes in all, `piece` of them left in the current
    /// piece; `first` until the first piece's header is written.
    Split {
        fin: bool,
        opcode: u8,
        key: [u8; 4],
        remaining: u64,
        piece: u64,
        first: bool,
    },
}

/// The adapter. Writes pass straight through.
#[derive(Debug)]
pub struct Reframe<S> {
    inner: S,
    state: State,
    /// Bytes read from `inner` (or given up front) that wait to be processed: used only around
    /// a frame being cut or a header split across reads, and freed after. Everything else is
    /// read straight into the caller's buffer and only scanned.
    input: Vec<u8>,
    start: usize,
    /// A header gathered from the input, or one to hand out.
    header: [u8; 14],
    header_len: usize,
    /// How much of `header` is handed out (when handing out).
    header_out: Option<usize>,
}

impl<S> Reframe<S> {
    /// For a stream whose HTTP request head has not been read yet.
    pub fn http(inner: S) -> Self {
        Self::new(inner, State::Http { matched: 0 }, Vec::new())
    }

    /// For a stream positioned after the request head; `early` are bytes already read past it.
    pub fn frames(inner: S, early: Vec<u8>) -> Self {
        Self::new(inner, State::Header, early)
    }

    fn new(inner: S, state: State, early: Vec<u8>) -> Self {
        Self {
            inner,
            state,
            input: early,
            start: 0,
            header: [0; 14],
            header_len: 0,
            header_out: None,
        }
    }

    /// Moves as much processed input to `out` as fits; false if it needs more input.
    fn process(&mut self, out: &mut ReadBuf<'_>) -> bool {
        loop {
            if out.remaining() == 0 {
                return true;
            }
            if let Some(done) = self.header_out {
                let n = (self.header_len - done).min(out.remaining());
                out.put_slice(&self.header[done..done + n]);
                if done + n == self.header_len {
                    self.header_out = None;
                    self.header_len = 0;
                } else {
                    self.header_out = Some(done + n);
                }
                continue;
            }
            let available = &self.input[self.start..];
            if available.is_empty() {
                return false;
            }
            match self.state {
                State::Http { mut matched } => {
                    let mut taken = 0;
                    for &b in available.iter().take(out.remaining()) {
                        taken += 1;
                        matched = next_matched(matched, b);
                        if matched == 4 {
                            break;
                        }
                    }
                    out.put_slice(&available[..taken]);
                    self.start += taken;
                    self.state = if matched == 4 {
                        State::Header
                    } else {
                        State::Http { matched }
                    };
                }
                State::Header => {
                    let need = header_size(&self.header[..self.header_len]);
                    let n = (need - self.header_len).min(available.len());
                    self.header[self.header_len..self.header_len + n]
                        .copy_from_slice(&available[..n]);
                    self.header_len += n;
                    self.start += n;
                    if self.header_len == need && need == header_size(&self.header[..need]) {
                        self.start_frame();
                    }
                }
                State::Pass { remaining } => {
                    let n = self.copy_out(out, remaining);
                    let remaining = remaining - n;
                    self.state = if remaining == 0 {
                        State::Header
                    } else {
                        State::Pass { remaining }
                    };
                }
                State::Split {
                    fin,
                    opcode,
                    key,
                    remaining,
                    piece,
                    first,
                } => {
                    if piece == 0 {
                        let len = remaining.min(PIECE as u64);
                        let last = len == remaining;
                        let op = if first { opcode } else { 0 };
                        self.header = [0; 14];
                        self.header[0] = (u8::from(fin && last) << 7) | op;
                        self.header[1] = 0x80 | 126;
                        // len <= PIECE < 65536.
                        self.header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                        self.header[4..8].copy_from_slice(&key);
                        self.header_len = 8;
                        self.header_out = Some(0);
                        self.state = State::Split {
                            fin,
                            opcode,
                            key,
                            remaining,
                            piece: len,
                            first: false,
                        };
                        continue;
                    }
                    let n = self.copy_out(out, piece);
                    let remaining = remaining - n;
                    self.state = if remaining == 0 {
                        State::Header
                    } else {
                        State::Split {
                            fin,
                            opcode,
                            key,
                            remaining,
                            piece: piece - n,
                            first,
                        }
                    };
                }
            }
        }
    }

    /// Copies up to `limit` bytes of input to `out`, as many as both hold; returns how many.
    fn copy_out(&mut self, out: &mut ReadBuf<'_>, limit: u64) -> u64 {
        let available = &self.input[self.start..];
        let n = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .min(available.len())
            .min(out.remaining());
        out.put_slice(&available[..n]);
        self.start += n;
        n as u64
    }

    /// A whole header is in `self.header`: pass the frame through or start cutting it.
    fn start_frame(&mut self) {
        let h = &self.header[..self.header_len];
        let len = payload_len(h);
        if must_cut(h) {
            let mut key = [0; 4];
            key.copy_from_slice(&h[h.len() - 4..]);
            self.state = State::Split {
                fin: h[0] & 0x80 != 0,
                opcode: h[0] & 0x0f,
                key,
                remaining: len,
                piece: 0,
                first: true,
            };
            self.header_len = 0;
        } else {
            self.header_out = Some(0);
            self.state = if len == 0 {
                State::Header
            } else {
                State::Pass { remaining: len }
            };
        }
    }
}

/// The full size of the header that starts with `have` (2 while fewer than 2 bytes are known).
fn header_size(have: &[u8]) -> usize {
    let [_, b1, ..] = *have else {
        return 2;
    };
    let extended = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + extended + if b1 & 0x80 != 0 { 4 } else { 0 }
}

impl<S> Reframe<S> {
    /// Whether bytes must go through `input` (a frame is being cut, or a header or stashed
    /// input is pending) rather than straight to the caller.
    fn stashing(&self) -> bool {
        self.header_out.is_some()
            || self.header_len > 0
            || self.start < self.input.len()
            || matches!(self.state, State::Split { .. })
    }

    /// Walks bytes already in `out` from `from` on, which pass through unchanged, until a frame
    /// header that is incomplete or must be cut: that header and what follows move to `input`.
    fn scan(&mut self, out: &mut ReadBuf<'_>, from: usize) {
        let mut i = from;
        let end = out.filled().len();
        while i < end {
            let bytes = &out.filled()[i..];
            match self.state {
                State::Http { mut matched } => {
                    let mut taken = 0;
                    for &b in bytes {
                        taken += 1;
                        matched = next_matched(matched, b);
                        if matched == 4 {
                            break;
                        }
                    }
                    i += taken;
                    self.state = if matched == 4 {
                        State::Header
                    } else {
                        State::Http { matched }
                    };
                }
                State::Pass { remaining } => {
                    let n = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len());
                    i += n;
                    let remaining = remaining - n as u64;
                    self.state = if remaining == 0 {
                        State::Header
                    } else {
                        State::Pass { remaining }
                    };
                }
                State::Header | State::Split { .. } => {
                    let size = header_size(&bytes[..bytes.len().min(2)]);
                    let whole = bytes.len() >= 2 && bytes.len() >= size;
                    if whole && !must_cut(&bytes[..size]) {
                        let len = payload_len(&bytes[..size]);
                        i += size;
                        self.state = if len == 0 {
                            State::Header
                        } else {
                            State::Pass { remaining: len }
                        };
                        continue;
                    }
                    // Not the caller's yet: processed from `input` on the next read.
                    self.state = State::Header;
                    self.input = bytes.to_vec();
                    self.start = 0;
                    out.set_filled(i);
                    return;
                }
            }
        }
    }
}

/// The next count of "\r\n\r\n" bytes matched after `b`.
fn next_matched(matched: usize, b: u8) -> usize {
    match (matched, b) {
        (0 | 2, b'\r') => matched + 1,
        (1 | 3, b'\n') => matched + 1,
        (_, b'\r') => 1,
        _ => 0,
    }
}

/// The payload length a whole header gives.
fn payload_len(h: &[u8]) -> u64 {
    match h[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
        127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
        n => u64::from(n),
    }
}

/// Whether the frame with this whole header is cut: a masked data frame longer than a piece,
/// with no reserved bits (tungstenite refuses those anyway).
fn must_cut(h: &[u8]) -> bool {
    let opcode = h[0] & 0x0f;
    opcode < 8 && h[1] & 0x80 != 0 && h[0] & 0x70 == 0 && payload_len(h) > PIECE as u64
}

impl<S: AsyncRead + Unpin> AsyncRead for Reframe<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            let before = out.filled().len();
            if !this.stashing() {
                // Straight into the caller's buffer, then scanned.
                this.input = Vec::new();
                this.start = 0;
                ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
                if out.filled().len() == before {
                    return Poll::Ready(Ok(()));
                }
                this.scan(out, before);
                if out.filled().len() > before {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if this.process(out) || out.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
            if !this.stashing() {
                continue;
            }
            // A frame being cut, or a header split across reads: more input into `input`.
            this.input.resize(PIECE, 0);
            this.start = 0;
            let mut buf = ReadBuf::new(&mut this.input);
            let result = Pin::new(&mut this.inner).poll_read(cx, &mut buf);
            let n = buf.filled().len();
            this.input.truncate(n);
            ready!(result)?;
            if n == 0 {
                // End of stream (a partial frame is tungstenite's to report).
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Reframe<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut f = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    }

    /// Parses masked frames: (fin, opcode, unmasked payload).
    fn parse(mut bytes: &[u8]) -> Vec<(bool, u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let size = header_size(&bytes[..2]);
            let h = &bytes[..size];
            let len = match h[1] & 0x7f {
                126 => usize::from(u16::from_be_bytes([h[2], h[3]])),
                127 => usize::try_from(u64::from_be_bytes(h[2..10].try_into().unwrap())).unwrap(),
                n => usize::from(n),
            };
            let key: [u8; 4] = h[size - 4..].try_into().unwrap();
            let payload = bytes[size..size + len]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            frames.push((h[0] & 0x80 != 0, h[0] & 0x0f, payload));
            bytes = &bytes[size + len..];
        }
        frames
    }

    /// Everything `input` becomes, read through the adapter in chunks of `chunk` bytes.
    async fn through(input: Vec<u8>, http: bool, chunk: usize) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(chunk);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            client.write_all(&input).await.unwrap();
        });
        let mut adapter = if http {
            Reframe::http(server)
        } else {
            Reframe::frames(server, Vec::new())
        };
        let mut out = Vec::new();
        let mut buf = vec![0; 777];
        loop {
            let n = adapter.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        writer.await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_large_frame_becomes_pieces_with_the_same_payload() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let key = [1, 2, 3, 4];
        let out = through(frame(true, 1, &payload, key), false, 100).await;
        let frames = parse(&out);
        assert_eq!(frames.len(), 5, "10000 bytes in pieces of 2048");
        assert_eq!(frames[0].1, 1, "the first piece keeps the opcode");
        assert!(
            frames[1..].iter().all(|f| f.1 == 0),
            "the rest are continuations"
        );
        assert!(
            frames[..4].iter().all(|f| !f.0) && frames[4].0,
            "only the last is final"
        );
        assert!(frames.iter().all(|f| f.2.len() <= PIECE));
        let joined: Vec<u8> = frames.into_iter().flat_map(|f| f.2).collect();
        assert_eq!(joined, payload);
    }

    #[tokio::test]
    async fn small_control_and_already_fragmented_frames_keep_their_shape() {
        let key = [9, 8, 7, 6];
        let big = vec![b'x'; 5000];
        let mut input = frame(true, 1, b"{\"type\":\"ping\"}", key);
        input.extend(frame(true, 9, b"", key)); // Ping
        input.extend(frame(false, 2, &big, key)); // first fragment, binary
        input.extend(frame(true, 10, b"pong", key)); // Pong between fragments
        input.extend(frame(true, 0, b"end", key)); // final continuation
        let frames = parse(&through(input, false, 64).await);
        let shape: Vec<(bool, u8, usize)> = frames.iter().map(|f| (f.0, f.1, f.2.len())).collect();
        assert_eq!(
            shape,
            [
                (true, 1, 15),
                (true, 9, 0),
                (false, 2, 2048),
                (false, 0, 2048),
                (false, 0, 904),
                (true, 10, 4),
                (true, 0, 3),
            ]
        );
    }

    #[tokio::test]
    async fn the_http_head_passes_through_and_frames_after_it_are_cut() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\r\n\r\n".to_vec();
        let payload = vec![b'y'; 4100];
        let mut input = head.clone();
        input.extend(frame(true, 1, &payload, [5, 5, 5, 5]));
        for chunk in [1, 7, 4096] {
            let out = through(input.clone(), true, chunk).await;
            assert_eq!(&out[..head.len()], &head[..]);
            let frames = parse(&out[head.len()..]);
            assert_eq!(frames.len(), 3, "chunk {chunk}");
            let joined: Vec<u8> = frames.into_iter().flat_map(|f| f.2).collect();
            assert_eq!(joined, payload);
        }
    }

    /// Through the adapter: every data message and control frame the same, in the same order,
    /// and no data frame longer than a piece; for any frames, any read sizes.
    fn reassemble(frames: &[(bool, u8, Vec<u8>)]) -> Vec<(u8, Vec<u8>)> {
        let mut messages = Vec::new();
        let mut current: Option<(u8, Vec<u8>)> = None;
        for (fin, opcode, payload) in frames {
            if *opcode >= 8 {
                messages.push((*opcode, payload.clone()));
                continue;
            }
            let entry = current.get_or_insert_with(|| (*opcode, Vec::new()));
            entry.1.extend_from_slice(payload);
            if *fin {
                messages.extend(current.take());
            }
        }
        messages
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn any_frames_any_chunks_same_messages(
            sizes in proptest::collection::vec((0usize..9000, 0u8..4, proptest::bool::ANY), 1..12),
            chunk in 1usize..5000,
            out_size in 1usize..5000,
            early in 0usize..300,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            // Messages of 1-3 frames each, with a Pong now and then between fragments.
            let mut input = Vec::new();
            let mut expected = Vec::new();
            for (i, (size, parts, pong)) in sizes.iter().enumerate() {
                let payload: Vec<u8> = (0..*size).map(|j| (i * 31 + j) as u8).collect();
                let key = [i as u8, 3, 5, 7];
                let parts = usize::from(*parts % 3) + 1;
                let step = payload.len() / parts + 1;
                let chunks: Vec<&[u8]> = if payload.is_empty() { vec![&[][..]] } else { payload.chunks(step).collect() };
                for (k, part) in chunks.iter().enumerate() {
                    let last = k + 1 == chunks.len();
                    input.extend(frame(last, if k == 0 { 1 + (i as u8 % 2) } else { 0 }, part, key));
                    if *pong && !last {
                        input.extend(frame(true, 10, b"p", key));
                        expected.push((10u8, b"p".to_vec()));
                    }
                }
                expected.push((1 + (i as u8 % 2), payload));
            }
            let out = rt.block_on(async move {
                let early_len = early.min(input.len());
                let rest = input[early_len..].to_vec();
                let (mut client, server) = tokio::io::duplex(chunk);
                let writer = tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    client.write_all(&rest).await.unwrap();
                });
                let mut adapter = Reframe::frames(server, input[..early_len].to_vec());
                let mut out = Vec::new();
                let mut buf = vec![0; out_size];
                loop {
                    let n = adapter.read(&mut buf).await.unwrap();
                    if n == 0 { break; }
                    out.extend_from_slice(&buf[..n]);
                }
                writer.await.unwrap();
                out
            });
            let frames = parse(&out);
            proptest::prop_assert!(frames.iter().all(|f| f.1 >= 8 || f.2.len() <= PIECE));
            // Control frames between fragments come out ahead of their message.
            let mut got = reassemble(&frames);
            let mut want = expected;
            got.sort_by_key(|m| m.0 >= 8);
            want.sort_by_key(|m| m.0 >= 8);
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[tokio::test]
    async fn early_bytes_are_read_first() {
        let key = [1, 1, 1, 1];
        let first = frame(true, 1, &vec![b'a'; 3000], key);
        let (early, rest) = first.split_at(100);
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let rest = rest.to_vec();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            client.write_all(&rest).await.unwrap();
        });
        let mut adapter = Reframe::frames(server, early.to_vec());
        let mut out = Vec::new();
        adapter.read_to_end(&mut out).await.unwrap();
        let frames = parse(&out);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].2.len() + frames[1].2.len(), 3000);
    }
}
