//! Property: whatever a repo's writer puts in a name, path, env key or other one-line field,
//! validation either refuses it or what it accepts holds no control character (C0, DEL, C1,
//! Unicode line separators and bidi overrides); multi-line fields (a Command's `run`) hold at
//! most newlines and tabs. Random strings made of every control character, ASCII and other
//! Unicode go through the real loader (`plumb::load::load`) of a repo written to disk.

use plumb::load::{LoadOptions, load};
use plumb::text::is_control;
use proptest::prelude::*;
use std::path::Path;

/// Every control character, ASCII that matters to shells and YAML, and some other Unicode.
fn hostile_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap_or('?')),
        1 => Just('\u{7f}'),
        2 => (0x80u32..0xa0).prop_map(|c| char::from_u32(c).unwrap_or('?')),
        1 => prop::sample::select(vec!['\u{2028}', '\u{2029}', '\u{202e}', '\u{2066}', '\u{200f}']),
        6 => prop::char::range('a', 'z'),
        2 => prop::sample::select(vec!['/', '-', '.', '_', ':', '=', ' ', '@', '\\', '$', ';', '\'', '"', '`']),
        1 => prop::sample::select(vec!['é', '中', '\u{a0}', '€']),
    ]
}

fn hostile_string() -> impl Strategy<Value = String> {
    prop::collection::vec(hostile_char(), 1..16).prop_map(|v| v.into_iter().collect())
}

/// A YAML double-quoted scalar holding exactly `s` (control characters as `\uXXXX`).
fn q(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if is_control(c) || (c as u32) < 0x20 => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const INVENTORY: &str = "hosts:\n  w1: { address: 10.0.0.1 }\n";

/// Where the random string goes, and the manifest that carries it.
fn manifest(slot: usize, s: &str) -> String {
    let v = q(s);
    match slot {
        0 => format!("kind: File\nname: {v}\nhosts: all\npath: /etc/x\ncontent: x\n"),
        1 => format!("kind: File\nhosts: all\npath: {v}\ncontent: x\n"),
        2 => format!(
            "kind: Directory\nhosts: all\npath: {}\n",
            q(&format!("/srv/{s}"))
        ),
        3 => format!("kind: User\nname: {v}\nhosts: all\n"),
        4 => format!("kind: Group\nname: {v}\nhosts: all\n"),
        5 => format!(
            "kind: SystemdUnit\nname: {}\nhosts: all\nactive: true\n",
            q(&format!("{s}.service"))
        ),
        6 => format!("kind: Package\nname: p\nhosts: all\npackages: [{v}]\n"),
        7 => format!(
            "kind: ComposeStack\nname: app\nhosts: all\ndir: /opt/app\ncontent: x\nenv: {{ {v}: x }}\n"
        ),
        8 => format!(
            "kind: ComposeStack\nname: app\nhosts: all\ndir: /opt/app\ncontent: x\nenv: {{ K: {v} }}\n"
        ),
        9 => {
            format!("kind: Command\nname: c\nhosts: all\nrun: x\ncreates: /x\nenv: {{ {v}: x }}\n")
        }
        10 => format!(
            "kind: Command\nname: c\nhosts: all\nrun: x\ncreates: /x\ncwd: {}\n",
            q(&format!("/{s}"))
        ),
        11 => format!("kind: User\nname: app\nhosts: all\ncomment: {v}\n"),
        12 => format!(
            "kind: File\nhosts: all\npath: /etc/x\ncontent: x\nnotify: [{}]\n",
            q(&format!("Command/{s}"))
        ),
        13 => format!("kind: ComposeStack\nname: {v}\nhosts: all\ndir: /opt/app\ncontent: x\n"),
        _ => format!("kind: Command\nname: c\nhosts: all\nrun: {v}\ncreates: /x\n"),
    }
}

const SLOTS: usize = 15;

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Loads a repo holding `manifest` (and `inventory`); true when it is accepted.
fn accepted(inventory: &str, manifest: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "inventory/hosts.yaml", inventory);
    write(dir.path(), "manifests/m.yaml", manifest);
    load(&LoadOptions {
        root: dir.path().to_path_buf(),
        placeholders: true,
        ..Default::default()
    })
    .is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn accepted_fields_hold_no_control_character(slot in 0..SLOTS, s in hostile_string()) {
        let m = manifest(slot, &s);
        if accepted(INVENTORY, &m) {
            if slot == SLOTS - 1 {
                // `run` is multi-line by design: newlines and tabs only.
                prop_assert!(
                    !s.chars().any(|c| is_control(c) && c != '\n' && c != '\t'),
                    "accepted {s:?} as `run`"
                );
            } else {
                prop_assert!(!s.chars().any(is_control), "accepted {s:?} in\n{m}");
            }
        }
    }

    #[test]
    fn accepted_inventories_hold_no_control_character(
        name in hostile_string(),
        address in hostile_string(),
        var in hostile_string(),
    ) {
        let inv = format!(
            "defaults:\n  vars: {{ {}: 1 }}\nhosts:\n  {}: {{ address: {} }}\n",
            q(&var), q(&name), q(&address)
        );
        let m = "kind: Directory\nhosts: all\npath: /srv\n";
        if accepted(&inv, m) {
            for s in [&name, &address, &var] {
                prop_assert!(!s.chars().any(is_control), "accepted {s:?} in\n{inv}");
            }
        }
    }
}

#[test]
fn the_property_test_can_tell_accepted_from_refused() {
    // Without this, a loader that refused everything would pass the properties above.
    assert!(accepted(INVENTORY, &manifest(0, "motd")));
    assert!(accepted(INVENTORY, &manifest(SLOTS - 1, "a\n\tb")));
    assert!(!accepted(INVENTORY, &manifest(0, "mo\u{1b}td")));
    assert!(!accepted(INVENTORY, &manifest(1, "/etc/a\nb")));
    for slot in 0..SLOTS {
        assert!(
            !accepted(INVENTORY, &manifest(slot, "a\u{85}b")),
            "slot {slot}"
        );
    }
}
