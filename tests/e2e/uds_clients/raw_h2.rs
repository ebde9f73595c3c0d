//! A deliberately naive HTTP/2 client for the `:authority` tests: it writes header blocks
//! byte by byte (HPACK literals, no compression, no validation of its own), so a test can
//! send exactly the pseudo-headers a real client library would never let it send, and
//! reports what the server did with each stream: answered, reset (with which code), or
//! gave up on the whole connection.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The HTTP/2 error code PROTOCOL_ERROR (RFC 9113 §7).
pub const PROTOCOL_ERROR: u32 = 0x1;
/// The HTTP/2 error code ENHANCE_YOUR_CALM: h2's answer to a header list far too large.
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// How long one read or write may block.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// SETTINGS_MAX_FRAME_SIZE's initial value: the largest frame either side may send first.
const MAX_FRAME: usize = 16_384;
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// One header field as sent: name and value bytes, unchecked.
pub type Field = (Vec<u8>, Vec<u8>);

/// What the server did with one request stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It answered: whether the first response header was `:status: 200`, and the gRPC
    /// messages of the response body (length prefixes removed).
    Answered {
        status_200: bool,
        messages: Vec<Vec<u8>>,
    },
    /// RST_STREAM with this error code.
    Reset(u32),
    /// GOAWAY with this error code: the connection is over.
    GoAway(u32),
    /// The connection closed or went silent without a word about the stream.
    Closed(String),
}

trait Transport: Read + Write {}
impl<T: Read + Write> Transport for T {}

/// A prefaced HTTP/2 connection.
pub struct RawH2 {
    transport: Box<dyn Transport>,
    next_stream_id: u32,
}

impl RawH2 {
    /// Connects to a Unix socket and exchanges the connection preface and SETTINGS.
    pub fn unix(path: &Path) -> RawH2 {
        let stream = UnixStream::connect(path)
            .unwrap_or_else(|error| panic!("cannot connect to {}: {error}", path.display()));
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("set a read timeout");
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .expect("set a write timeout");
        RawH2::handshake(Box::new(stream))
    }

    /// Connects over TCP and exchanges the connection preface and SETTINGS.
    pub fn tcp(addr: SocketAddr) -> RawH2 {
        let stream = TcpStream::connect(addr)
            .unwrap_or_else(|error| panic!("cannot connect to {addr}: {error}"));
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("set a read timeout");
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .expect("set a write timeout");
        RawH2::handshake(Box::new(stream))
    }

    fn handshake(transport: Box<dyn Transport>) -> RawH2 {
        let mut connection = RawH2 {
            transport,
            next_stream_id: 1,
        };
        connection
            .transport
            .write_all(PREFACE)
            .expect("write the preface");
        connection
            .write_frame(SETTINGS, 0, 0, &[])
            .expect("write SETTINGS");
        // The server's SETTINGS come first; `read_frame` acknowledges them.
        match connection.read_frame() {
            Ok((SETTINGS, _, 0, _)) => connection,
            other => panic!("expected the server's SETTINGS, got {other:?}"),
        }
    }

    /// Sends one request (a HEADERS block, split into CONTINUATION frames when it is larger
    /// than a frame, then `body` as one gRPC message if given) on a new stream and reads
    /// until the server finishes or refuses that stream.
    pub fn request(&mut self, fields: &[Field], body: Option<&[u8]>) -> Outcome {
        let stream_id = self.next_stream_id;
        self.next_stream_id += 2;
        // A server may give up on the connection half-way through a large request; what it
        // said before closing is still there to read.
        let _ = self.send(stream_id, fields, body);
        self.read_outcome(stream_id)
    }

    fn send(&mut self, stream_id: u32, fields: &[Field], body: Option<&[u8]>) -> io::Result<()> {
        let block = encode_block(fields);
        let chunks: Vec<&[u8]> = block.chunks(MAX_FRAME).collect();
        for (index, chunk) in chunks.iter().enumerate() {
            let mut flags = if index + 1 == chunks.len() {
                END_HEADERS
            } else {
                0
            };
            if body.is_none() && index == 0 {
                flags |= END_STREAM;
            }
            let kind = if index == 0 { HEADERS } else { CONTINUATION };
            self.write_frame(kind, flags, stream_id, chunk)?;
        }
        if let Some(message) = body {
            let mut framed = vec![0u8];
            framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
            framed.extend_from_slice(message);
            self.write_frame(DATA, END_STREAM, stream_id, &framed)?;
        }
        Ok(())
    }

    fn read_outcome(&mut self, stream_id: u32) -> Outcome {
        let mut status_200 = None;
        let mut body = Vec::new();
        loop {
            let (kind, flags, id, payload) = match self.read_frame() {
                Ok(frame) => frame,
                Err(error) => return Outcome::Closed(error),
            };
            if kind == GOAWAY {
                let code = payload.get(4..8).map_or(u32::MAX, |code| {
                    u32::from_be_bytes(code.try_into().unwrap())
                });
                return Outcome::GoAway(code);
            }
            if id != stream_id {
                continue;
            }
            match kind {
                RST_STREAM => {
                    let code = payload.get(..4).map_or(u32::MAX, |code| {
                        u32::from_be_bytes(code.try_into().unwrap())
                    });
                    return Outcome::Reset(code);
                }
                HEADERS if status_200.is_none() => {
                    status_200 = Some(first_field_is_status_200(&payload, flags));
                }
                DATA => body.extend_from_slice(&payload),
                _ => {}
            }
            if (kind == HEADERS || kind == DATA) && flags & END_STREAM != 0 {
                return Outcome::Answered {
                    status_200: status_200.unwrap_or(false),
                    messages: grpc_messages(&body),
                };
            }
        }
    }

    fn write_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream_id: u32,
        payload: &[u8],
    ) -> io::Result<()> {
        let length = u32::try_from(payload.len()).expect("a frame fits in u32");
        let mut frame = length.to_be_bytes()[1..].to_vec();
        frame.extend_from_slice(&[kind, flags]);
        frame.extend_from_slice(&stream_id.to_be_bytes());
        frame.extend_from_slice(payload);
        self.transport.write_all(&frame)
    }

    /// Reads one frame, answering SETTINGS and PING as the protocol requires.
    fn read_frame(&mut self) -> Result<(u8, u8, u32, Vec<u8>), String> {
        let mut header = [0u8; 9];
        self.transport
            .read_exact(&mut header)
            .map_err(|error| match error.kind() {
                ErrorKind::WouldBlock | ErrorKind::TimedOut => "no frame within 10 s".to_owned(),
                _ => format!("connection closed: {error}"),
            })?;
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let (kind, flags) = (header[3], header[4]);
        let stream_id = u32::from_be_bytes(header[5..9].try_into().unwrap()) & 0x7fff_ffff;
        let mut payload = vec![0u8; length];
        self.transport
            .read_exact(&mut payload)
            .map_err(|error| format!("connection closed mid-frame: {error}"))?;
        // Best effort: a failed acknowledgement shows as the next read's error.
        if kind == SETTINGS && flags & ACK == 0 {
            let _ = self.write_frame(SETTINGS, ACK, 0, &[]);
        }
        if kind == PING && flags & ACK == 0 {
            let _ = self.write_frame(PING, ACK, 0, &payload);
        }
        Ok((kind, flags, stream_id, payload))
    }
}

/// The request headers of a gRPC call to `path` (`:authority` only when given), in the
/// order gRPC clients send them.
pub fn grpc_request(path: &str, authority: Option<&[u8]>) -> Vec<Field> {
    let mut fields = vec![
        field(":method", b"POST"),
        field(":scheme", b"http"),
        field(":path", path.as_bytes()),
    ];
    if let Some(authority) = authority {
        fields.push(field(":authority", authority));
    }
    fields.push(field("content-type", b"application/grpc"));
    fields.push(field("te", b"trailers"));
    fields
}

/// One header field.
pub fn field(name: &str, value: &[u8]) -> Field {
    (name.as_bytes().to_vec(), value.to_vec())
}

/// `fields` as an HPACK block of "literal header field without indexing — new name"
/// representations (RFC 7541 §6.2.2): no table state, no Huffman, bytes exactly as given.
fn encode_block(fields: &[Field]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x00);
        encode_string(&mut block, name);
        encode_string(&mut block, value);
    }
    block
}

fn encode_string(block: &mut Vec<u8>, bytes: &[u8]) {
    // A string literal: H=0 and a 7-bit-prefix length (RFC 7541 §5.1, §5.2).
    let mut length = bytes.len();
    if length < 0x7f {
        block.push(length as u8);
    } else {
        block.push(0x7f);
        length -= 0x7f;
        while length >= 0x80 {
            block.push((length % 0x80) as u8 | 0x80);
            length /= 0x80;
        }
        block.push(length as u8);
    }
    block.extend_from_slice(bytes);
}

/// Whether a response header block starts with the static-table entry `:status: 200`
/// (index 8, byte 0x88), after any dynamic-table size updates. h2 encodes a 200 that way;
/// any other status is a literal.
fn first_field_is_status_200(payload: &[u8], flags: u8) -> bool {
    const PADDED: u8 = 0x8;
    const PRIORITY: u8 = 0x20;
    let mut block = payload;
    if flags & PADDED != 0 {
        let pad = usize::from(block[0]);
        block = &block[1..block.len() - pad];
    }
    if flags & PRIORITY != 0 {
        block = &block[5..];
    }
    block
        .iter()
        .find(|byte| *byte & 0xe0 != 0x20)
        .is_some_and(|byte| *byte == 0x88)
}

/// Splits a gRPC body into its messages (each: 1 flag byte, 4 length bytes, message).
fn grpc_messages(mut body: &[u8]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    while body.len() >= 5 {
        let length = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        let end = (5 + length).min(body.len());
        messages.push(body[5..end].to_vec());
        body = &body[end..];
    }
    messages
}

/// A protobuf message with one string field: `tessera.v1.ValidateTokenRequest{token}`
/// (field 1), hand-encoded so the test needs no protobuf runtime.
pub fn validate_token_request(token: &str) -> Vec<u8> {
    let mut message = vec![0x0a];
    let mut length = token.len();
    while length >= 0x80 {
        message.push((length % 0x80) as u8 | 0x80);
        length /= 0x80;
    }
    message.push(length as u8);
    message.extend_from_slice(token.as_bytes());
    message
}

/// Whether an encoded `ValidateTokenResponse` says `valid: true` (field 1, varint 1, which
/// prost writes first).
pub fn says_valid(message: &[u8]) -> bool {
    message.starts_with(&[0x08, 0x01])
}
