use super::*;

#[test]
fn key_files_load_as_hex_or_base64() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let bytes = random_bytes::<32>();
    std::fs::write(dir.path().join("a"), format!("{}\n", hex::encode(bytes))).unwrap();
    std::fs::write(dir.path().join("b"), base64::engine::general_purpose::STANDARD.encode(bytes)).unwrap();
    std::fs::write(dir.path().join("c"), base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)).unwrap();
    let ring = KeyRing::load(dir.path()).unwrap();
    assert_eq!(ring.accepted_kids().map(KeyId::as_str).collect::<Vec<_>>(), ["a", "b", "c"]);
}

#[test]
fn greatest_kid_mints_when_no_current_file() {
    let dir = tempfile::tempdir().unwrap();
    write_key(dir.path(), "2025-01");
    write_key(dir.path(), "2026-01");
    write_key(dir.path(), "2025-06");
    assert_eq!(KeyRing::load(dir.path()).unwrap().current_kid().as_str(), "2026-01");
}

#[test]
fn current_file_names_the_minting_key() {
    let dir = tempfile::tempdir().unwrap();
    write_key(dir.path(), "old");
    write_key(dir.path(), "zzz-staged");
    std::fs::write(dir.path().join("current"), "old\n").unwrap();
    assert_eq!(KeyRing::load(dir.path()).unwrap().current_kid().as_str(), "old");
}

#[test]
fn current_file_naming_an_absent_key_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_key(dir.path(), "k1");
    std::fs::write(dir.path().join("current"), "k2").unwrap();
    assert!(matches!(KeyRing::load(dir.path()), Err(KeyRingError::CurrentKeyMissing(k)) if k == "k2"));
}

#[test]
fn empty_key_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(KeyRing::load(dir.path()), Err(KeyRingError::NoKeys(_))));
}

#[test]
fn missing_key_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(KeyRing::load(&dir.path().join("nope")), Err(KeyRingError::Io { .. })));
}

#[test]
fn key_file_of_wrong_length_or_encoding_is_refused() {
    for content in ["", "00", &hex::encode([7u8; 31]), &hex::encode([7u8; 33]), "not a key at all", &"g".repeat(64)] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k"), content).unwrap();
        assert!(
            matches!(KeyRing::load(dir.path()), Err(KeyRingError::InvalidKeyFile { .. })),
            "{content:?} was accepted"
        );
    }
}

#[test]
fn hidden_entries_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    write_key(dir.path(), "k1");
    std::fs::write(dir.path().join(".tmp-k2"), "half written").unwrap();
    std::fs::create_dir(dir.path().join("..data")).unwrap();
    let ring = KeyRing::load(dir.path()).unwrap();
    assert_eq!(ring.accepted_kids().count(), 1);
}

#[test]
fn entries_that_are_not_key_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_key(dir.path(), "k1");
    write_key(dir.path(), "bad name");
    assert!(matches!(KeyRing::load(dir.path()), Err(KeyRingError::InvalidKeyId(_))));

    let dir = tempfile::tempdir().unwrap();
    write_key(dir.path(), "k1");
    std::fs::create_dir(dir.path().join("subdir")).unwrap();
    assert!(matches!(KeyRing::load(dir.path()), Err(KeyRingError::UnexpectedEntry(_))));
}

#[test]
fn key_ids_are_restricted() {
    for bad in ["", ".hidden", "current", "a/b", "a b", "ü", &"k".repeat(65)] {
        assert!(KeyId::new(bad).is_err(), "{bad:?} was accepted");
    }
    for good in ["k1", "2026-03-21T120000Z-ab12", "a.b_c-d", &"k".repeat(64)] {
        assert!(KeyId::new(good).is_ok(), "{good:?} was refused");
    }
}

#[test]
fn first_start_generates_one_private_key_and_reuses_it() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("keys");
    let first = KeyRing::load_or_generate(&dir).unwrap();
    let second = KeyRing::load_or_generate(&dir).unwrap();
    assert_eq!(first.current_kid(), second.current_kid());
    assert_eq!(second.accepted_kids().count(), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(first.current_kid().as_str())), 0o600);
    }
}

#[test]
fn a_generated_key_sorts_after_older_generated_keys() {
    let dir = tempfile::tempdir().unwrap();
    let old = "20200101T000000Z-0000";
    write_key(dir.path(), old);
    let new = KeyRing::generate_key_file(dir.path()).unwrap();
    assert!(new.as_str() > old);
    assert_eq!(KeyRing::load(dir.path()).unwrap().current_kid(), &new);
}

#[test]
fn debug_of_a_ring_shows_kids_but_no_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let key = hex::encode(random_bytes::<32>());
    std::fs::write(dir.path().join("k1"), &key).unwrap();
    let shown = format!("{:?}", KeyRing::load(dir.path()).unwrap());
    assert!(shown.contains("k1"));
    assert!(!shown.contains(&key));
    assert!(!shown.contains(&key[..8]));
}
