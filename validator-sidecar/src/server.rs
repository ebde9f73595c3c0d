//! Listeners: the Unix socket (a stale socket file is replaced at start, the file gets the
//! configured mode and is removed at shutdown), the optional TCP gRPC port and the
//! optional HTTP port.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, UnixListener};

use crate::config::ServeConfig;

/// The sockets the sidecar serves on, bound before [`crate::run`] starts.
#[derive(Debug, Default)]
pub struct Listeners {
    pub unix: Option<UnixSocket>,
    pub grpc_tcp: Option<TcpListener>,
    pub http: Option<TcpListener>,
}

/// A bound Unix socket that removes its file when dropped.
#[derive(Debug)]
pub struct UnixSocket {
    listener: Option<UnixListener>,
    path: PathBuf,
}

/// A listener that could not be bound; the message names the address.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("socket {path}: {source}")]
    Unix { path: PathBuf, source: io::Error },
    #[error("socket {path}: another process is serving on it")]
    InUse { path: PathBuf },
    #[error("socket {path}: exists and is not a socket")]
    NotASocket { path: PathBuf },
    #[error("{addr}: {source}")]
    Tcp { addr: String, source: io::Error },
}

impl Listeners {
    /// Binds every listener `config` asks for. Must run inside a tokio runtime.
    pub async fn bind(config: &ServeConfig) -> Result<Self, BindError> {
        let unix = UnixSocket::bind(&config.socket, config.socket_mode)?;
        let bind_tcp = |addr: std::net::SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| BindError::Tcp {
                    addr: addr.to_string(),
                    source,
                })
        };
        let grpc_tcp = match config.grpc_addr {
            Some(addr) => Some(bind_tcp(addr).await?),
            None => None,
        };
        let http = match config.http_addr {
            Some(addr) => Some(bind_tcp(addr).await?),
            None => None,
        };
        Ok(Listeners {
            unix: Some(unix),
            grpc_tcp,
            http,
        })
    }
}

// === impl UnixSocket ===

impl UnixSocket {
    /// Binds `path` with permission bits `mode`, replacing a stale socket file left by a
    /// previous run; refuses a path that is not a socket or that a live process serves.
    pub fn bind(path: &Path, mode: u32) -> Result<Self, BindError> {
        let unix_error = |source| BindError::Unix {
            path: path.to_owned(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(metadata) if metadata.file_type().is_socket() => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(BindError::InUse {
                        path: path.to_owned(),
                    });
                }
                tracing::info!(path = %path.display(), "replacing a stale socket file");
                std::fs::remove_file(path).map_err(unix_error)?;
            }
            Ok(_) => {
                return Err(BindError::NotASocket {
                    path: path.to_owned(),
                });
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(unix_error(error)),
        }
        let listener = UnixListener::bind(path).map_err(unix_error)?;
        let socket = UnixSocket {
            listener: Some(listener),
            path: path.to_owned(),
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(unix_error)?;
        Ok(socket)
    }

    /// Returns the socket file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the listener out (the file is still removed on drop).
    pub fn take_listener(&mut self) -> Option<UnixListener> {
        self.listener.take()
    }
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => tracing::debug!(path = %self.path.display(), "removed the socket file"),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "could not remove the socket file")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_socket_is_replaced_live_one_refused_and_file_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        // A stale socket: bound, then its listener dropped without removing the file.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let socket = UnixSocket::bind(&path, 0o660).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        assert!(matches!(
            UnixSocket::bind(&path, 0o660),
            Err(BindError::InUse { .. })
        ));
        drop(socket);
        assert!(!path.exists());
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        assert!(matches!(
            UnixSocket::bind(&plain, 0o660),
            Err(BindError::NotASocket { .. })
        ));
        assert!(plain.exists());
    }
}
