//! Real delivery endpoints for the challenge tests: an SMTP server speaking the protocol
//! over a real socket (greeting, EHLO, MAIL, RCPT, DATA, QUIT; no STARTTLS offered) that
//! records each message, and an HTTP receiver (axum) recording each POST's headers and
//! body and answering with a settable status.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One message as the SMTP server received it.
#[derive(Clone, Debug)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

/// A running SMTP server.
pub struct SmtpServer {
    pub addr: SocketAddr,
    pub mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpServer {
    /// Starts the server on 127.0.0.1:0.
    pub async fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind smtp");
        let addr = listener.local_addr().expect("smtp addr");
        let mails = Arc::new(Mutex::new(Vec::new()));
        let recorded = mails.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let _ = session(stream, recorded).await;
                });
            }
        });
        SmtpServer { addr, mails }
    }

    /// Returns the messages received so far.
    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

async fn session(
    stream: tokio::net::TcpStream,
    mails: Arc<Mutex<Vec<Mail>>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 test.local ESMTP ready\r\n").await?;
    let mut mail = Mail {
        from: String::new(),
        to: Vec::new(),
        data: String::new(),
    };
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            write
                .write_all(b"250-test.local\r\n250-8BITMIME\r\n250 SIZE 1000000\r\n")
                .await?;
        } else if upper.starts_with("MAIL FROM:") {
            mail.from = command[10..].trim().to_owned();
            write.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            mail.to.push(command[8..].trim().to_owned());
            write.write_all(b"250 OK\r\n").await?;
        } else if upper == "DATA" {
            write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" {
                    break;
                }
                data.push_str(&line);
            }
            mail.data = data;
            mails.lock().unwrap().push(mail.clone());
            write.write_all(b"250 OK queued\r\n").await?;
        } else if upper == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else if upper == "RSET" || upper == "NOOP" {
            write.write_all(b"250 OK\r\n").await?;
        } else {
            write.write_all(b"502 not implemented\r\n").await?;
        }
    }
}

/// One POST as the HTTP receiver got it.
#[derive(Clone, Debug)]
pub struct Post {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

#[derive(Clone)]
struct Receiver {
    posts: Arc<Mutex<Vec<Post>>>,
    status: Arc<Mutex<StatusCode>>,
}

/// A running HTTP receiver.
pub struct HttpReceiver {
    pub url: String,
    posts: Arc<Mutex<Vec<Post>>>,
    status: Arc<Mutex<StatusCode>>,
}

impl HttpReceiver {
    /// Starts the receiver on 127.0.0.1:0, answering 200 to POST /hook.
    pub async fn start() -> HttpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let addr = listener.local_addr().expect("http addr");
        let receiver = Receiver {
            posts: Arc::new(Mutex::new(Vec::new())),
            status: Arc::new(Mutex::new(StatusCode::OK)),
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(record))
            .with_state(receiver.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HttpReceiver {
            url: format!("http://{addr}/hook"),
            posts: receiver.posts,
            status: receiver.status,
        }
    }

    /// Makes every later POST answer `status`.
    pub fn answer(&self, status: StatusCode) {
        *self.status.lock().unwrap() = status;
    }

    /// Returns the POSTs received so far.
    pub fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }
}

async fn record(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    receiver.posts.lock().unwrap().push(Post {
        headers,
        body: body.to_vec(),
    });
    *receiver.status.lock().unwrap()
}

/// Returns a local address nothing listens on (bound, then closed).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    tokio::time::sleep(Duration::from_millis(10)).await;
    addr
}
