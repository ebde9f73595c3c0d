//! Scans files and directory trees: skips `.git`, `target` and `node_modules`
//! directories, symbolic links met while walking, binary files (a NUL byte in the first
//! 8 KiB, git's own test) and files over the size limit.

use std::path::Path;

use super::{Location, Report};

/// Directories never descended into: version-control internals (scanned with `--git`
/// instead), build output and vendored dependencies.
const SKIPPED_DIRECTORIES: [&str; 3] = [".git", "target", "node_modules"];

/// How much of a file is looked at for a NUL byte to call it binary.
const BINARY_SNIFF_BYTES: usize = 8 << 10;

/// Scans `path`: a file (even one inside a skipped directory: it was named), or a
/// directory, recursively.
pub fn scan_path(path: &Path, max_file_bytes: u64, report: &mut Report) {
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => scan_directory(path, max_file_bytes, report),
        Ok(metadata) => scan_file(path, metadata.len(), max_file_bytes, report),
        Err(error) => report.errors.push(format!("{}: {error}", path.display())),
    }
}

fn scan_directory(directory: &Path, max_file_bytes: u64, report: &mut Report) {
    let entries = match std::fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(error) => {
            report
                .errors
                .push(format!("{}: {error}", directory.display()));
            return;
        }
    };
    let mut entries: Vec<_> = match entries.collect::<Result<_, _>>() {
        Ok(entries) => entries,
        Err(error) => {
            report
                .errors
                .push(format!("{}: {error}", directory.display()));
            return;
        }
    };
    // A stable order, so two runs print the same report.
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let file_type = match entry.file_type() {
            Ok(file_type) => file_type,
            Err(error) => {
                report.errors.push(format!("{}: {error}", path.display()));
                continue;
            }
        };
        if file_type.is_dir() {
            let name = entry.file_name();
            if !SKIPPED_DIRECTORIES.iter().any(|skipped| name == *skipped) {
                scan_directory(&path, max_file_bytes, report);
            }
        } else if file_type.is_file() {
            match entry.metadata() {
                Ok(metadata) => scan_file(&path, metadata.len(), max_file_bytes, report),
                Err(error) => report.errors.push(format!("{}: {error}", path.display())),
            }
        }
        // Symbolic links, sockets and devices met while walking are not followed: a link
        // can loop or leave the tree; a named one is scanned (`scan_path`).
    }
}

fn scan_file(path: &Path, length: u64, max_file_bytes: u64, report: &mut Report) {
    let shown = path.display().to_string();
    if length > max_file_bytes {
        report
            .skipped
            .push((shown, format!("larger than {max_file_bytes} bytes")));
        return;
    }
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) => {
            report.errors.push(format!("{shown}: {error}"));
            return;
        }
    };
    let sniffed = &bytes[..bytes.len().min(BINARY_SNIFF_BYTES)];
    if memchr_nul(sniffed) {
        report.skipped.push((shown, "binary".to_owned()));
        return;
    }
    report.n_files += 1;
    report.n_bytes += bytes.len() as u64;
    let start = Location {
        commit: None,
        path: shown,
        line: 1,
        column: 1,
    };
    report.scan(&bytes, &start);
}

fn memchr_nul(bytes: &[u8]) -> bool {
    bytes.contains(&0)
}
