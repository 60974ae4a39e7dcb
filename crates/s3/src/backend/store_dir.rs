//! The embedded store's root directory, held open, and the files a GET reads named relative to it.
//!
//! A GET opens the object and looks at its two attribute files: three lookups by name. Given as absolute paths,
//! the kernel walks every directory from `/` down to the store's root again for each of them, on every request
//! (`link_path_walk` and `__d_lookup_rcu` showed in the profile of a 4 KiB GET, docs/benchmarks.md). From a
//! descriptor of the root it walks only the names below it. The root is opened once, when the store is: replacing
//! or moving the store's directory while Lakegate runs is not supported (s3s-fs, which serves the other
//! operations, would follow the new directory by its path).
//!
//! Names given here are built by [`super::object_file`] from a checked bucket name and the key's stored name, so
//! they stay below the root; the root itself is opened with `O_PATH`, which allows nothing but lookups.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags, Statx, StatxFlags};

/// A descriptor of the store's root directory.
#[derive(Debug)]
pub(super) struct StoreDir {
    root: OwnedFd,
}

impl StoreDir {
    /// Opens the directory at `root` (which must exist).
    pub(super) fn open(root: &Path) -> std::io::Result<Self> {
        let root = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Self { root })
    }

    /// Opens the file `name` below the root for reading.
    pub(super) fn open_file(&self, name: &str) -> std::io::Result<File> {
        Ok(File::from(rustix::fs::openat(&self.root, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?))
    }

    /// The status of the file `name` below the root, as `stat` gives it (symbolic links followed).
    pub(super) fn status(&self, name: &str) -> std::io::Result<Statx> {
        Ok(rustix::fs::statx(&self.root, name, AtFlags::empty(), StatxFlags::BASIC_STATS)?)
    }
}

/// The status of a file already open.
pub(super) fn status_of(file: &File) -> std::io::Result<Statx> {
    Ok(rustix::fs::statx(file, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_found_by_their_names_below_the_root() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::create_dir(dir.path().join("bucket")).expect("mkdir");
        std::fs::write(dir.path().join("bucket").join("object"), b"bytes").expect("write");
        let store = StoreDir::open(dir.path()).expect("open the root");

        let mut text = String::new();
        std::io::Read::read_to_string(&mut store.open_file("bucket/object").expect("open"), &mut text).expect("read");
        assert_eq!(text, "bytes");
        assert_eq!(store.status("bucket/object").expect("status").stx_size, 5);
        let missing = store.open_file("bucket/other").expect_err("no such file");
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(store.status("other").expect_err("no such file").kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn an_open_file_and_its_name_have_the_same_status() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("a.json"), b"{}").expect("write");
        let store = StoreDir::open(dir.path()).expect("open the root");
        let by_name = store.status("a.json").expect("status");
        let by_file = status_of(&store.open_file("a.json").expect("open")).expect("status");
        assert_eq!((by_name.stx_ino, by_name.stx_size), (by_file.stx_ino, by_file.stx_size));
    }
}
