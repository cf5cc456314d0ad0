//! Tests of `bda data kanji`: the renderer and the generator on a small hand-written stroke
//! set (no Debian package needed), the missing-source error, and, when python3-kanjidraw
//! is installed, the command end to end against `fixtures/omniglot-tiny`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use bda_host::datagen::kanji::{
    CANVAS, KANJIDRAW_DATA, Kanji, KanjiParams, generate, is_evaluation, render_drawing,
};
use bda_host::fewshot::data::{Split, load_omniglot};

/// `bda ARGS`: exit code, stdout, stderr.
fn bda(args: &[&str]) -> (i32, String, String) {
    bda_testkit::report::run_text(std::path::Path::new(env!("CARGO_BIN_EXE_bda")), args)
}

/// A few hand-written characters in kanjidraw's 0–255 frame (straight strokes, y down).
fn strokes() -> Vec<Kanji> {
    let k = |ch: char, strokes: &[[f32; 4]]| Kanji {
        ch,
        strokes: strokes.to_vec(),
    };
    vec![
        k('一', &[[25.0, 126.0, 226.0, 116.0]]),
        k(
            '十',
            &[[30.0, 120.0, 225.0, 118.0], [128.0, 25.0, 126.0, 230.0]],
        ),
        k(
            '人',
            &[[127.0, 46.0, 38.0, 204.0], [107.0, 126.0, 217.0, 209.0]],
        ),
        k(
            '二',
            &[[59.0, 75.0, 185.0, 68.0], [28.0, 188.0, 226.0, 180.0]],
        ),
        k(
            '三',
            &[
                [60.0, 50.0, 190.0, 48.0],
                [75.0, 125.0, 180.0, 123.0],
                [35.0, 205.0, 220.0, 200.0],
            ],
        ),
        k(
            '口',
            &[
                [50.0, 60.0, 55.0, 200.0],
                [52.0, 60.0, 200.0, 62.0],
                [200.0, 62.0, 195.0, 200.0],
                [55.0, 195.0, 197.0, 195.0],
            ],
        ),
        k(
            '王',
            &[
                [50.0, 50.0, 205.0, 48.0],
                [60.0, 128.0, 195.0, 126.0],
                [128.0, 50.0, 128.0, 215.0],
                [30.0, 215.0, 225.0, 212.0],
            ],
        ),
        k(
            '川',
            &[
                [60.0, 40.0, 40.0, 210.0],
                [128.0, 50.0, 128.0, 190.0],
                [200.0, 30.0, 205.0, 230.0],
            ],
        ),
    ]
}

fn dark_fraction(img: &[u8]) -> f64 {
    img.iter().filter(|&&g| g < 128).count() as f64 / img.len() as f64
}

#[test]
fn rendering_is_deterministic_and_varies_by_drawer_and_seed() {
    for k in strokes() {
        let a = render_drawing(&k.strokes, 3, k.ch, 0);
        assert_eq!(a.len(), CANVAS * CANVAS);
        assert_eq!(a, render_drawing(&k.strokes, 3, k.ch, 0), "{}", k.ch);
        assert_ne!(a, render_drawing(&k.strokes, 3, k.ch, 1), "{}", k.ch);
        assert_ne!(a, render_drawing(&k.strokes, 4, k.ch, 0), "{}", k.ch);
    }
}

#[test]
fn rendered_strokes_look_like_pen_strokes() {
    for k in strokes() {
        for drawer in 0..10 {
            let img = render_drawing(&k.strokes, 0, k.ch, drawer);
            let ink = dark_fraction(&img);
            // Per stroke a line of ~2–4 px over ~40–90 px: 0.5 % to 5 % of the canvas each.
            let n = k.strokes.len() as f64;
            assert!(
                (0.004 * n..0.06 * n).contains(&ink),
                "{} drawer {drawer}: dark fraction {ink}",
                k.ch
            );
            // White background around the character, full ink on the strokes, and
            // anti-aliased edges (intermediate greys).
            for corner in [0, CANVAS - 1, CANVAS * (CANVAS - 1), CANVAS * CANVAS - 1] {
                assert_eq!(img[corner], 255, "{} drawer {drawer}", k.ch);
            }
            assert!(img.iter().any(|&g| g < 20), "{} drawer {drawer}", k.ch);
            let grey = img.iter().filter(|&&g| (40..215).contains(&g)).count();
            assert!(grey > 20, "{} drawer {drawer}: {grey} edge pixels", k.ch);
        }
    }
    // Each stroke is visible near where the affine map puts its midpoint: for the
    // horizontal stroke of 一 some pixel in a band around the middle row is dark.
    for drawer in 0..10 {
        let img = render_drawing(&[[25.0, 126.0, 226.0, 116.0]], 0, '一', drawer);
        let band = &img[CANVAS * 35..CANVAS * 70];
        assert!(band.iter().any(|&g| g < 50), "drawer {drawer}");
        let top = &img[..CANVAS * 25];
        assert!(
            top.iter().all(|&g| g == 255),
            "drawer {drawer}: ink near the top"
        );
    }
}

fn read_tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn params(drawers: usize, seed: u64, limit: Option<usize>) -> KanjiParams {
    KanjiParams {
        drawers,
        seed,
        limit,
        source: "hand-written test strokes".into(),
    }
}

/// The generator renders on rayon's pool: 1, 2 and 3 threads write the same bytes.
#[test]
fn generator_writes_the_same_bytes_with_any_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = |threads: usize| {
        let out = tmp.path().join(format!("t{threads}"));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| generate(&strokes(), &out, &params(5, 3, None), false))
            .unwrap();
        read_tree(&out)
    };
    let one = tree(1);
    assert!(one.len() > 30, "{} files", one.len());
    assert_eq!(tree(2), one, "2 threads");
    assert_eq!(tree(3), one, "3 threads");
}

#[test]
fn generator_writes_the_omniglot_layout_deterministically() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let s = generate(&strokes(), &a, &params(4, 11, None), false).unwrap();
    generate(&strokes(), &b, &params(4, 11, None), false).unwrap();
    let ta = read_tree(&a);
    assert_eq!(ta, read_tree(&b), "same seed, different bytes");
    assert_eq!(s.characters(), 8);
    assert_eq!(s.images(), 32);
    let pngs = ta
        .keys()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .count();
    assert_eq!(pngs, 32);
    let ev = strokes().iter().filter(|k| is_evaluation(k.ch)).count();
    assert_eq!(s.evaluation, ev);
    // One alphabet (8 characters are fewer than MIN_ALPHABET, so all counts merge).
    assert_eq!(s.alphabets, 1);
    assert!(
        a.join("images_background/strokes-01-04/u4e00/01.png")
            .is_file()
            || is_evaluation('一')
    );
    let readme = String::from_utf8(ta[Path::new("README.txt")].clone()).unwrap();
    for needle in [
        "NOT Omniglot",
        "CC-BY-SA-3.0",
        "Ulrich Apel",
        "--seed 11",
        "--drawers 4",
    ] {
        assert!(readme.contains(needle), "README.txt lacks {needle:?}");
    }
    let tsv = String::from_utf8(ta[Path::new("characters.tsv")].clone()).unwrap();
    assert_eq!(tsv.lines().count(), 9);
    assert!(tsv.contains("\tu53e3\t口\t4"), "{tsv}");

    // The reader reads it back: 28×28 ink images, 4 per character.
    let bg = load_omniglot(&a, Split::Background, false).unwrap();
    assert_eq!(bg.classes.len(), s.background);
    assert!(bg.classes.iter().all(|c| c.n == 4));

    // Another seed changes every image; the same seed again into an existing folder fails.
    let c = tmp.path().join("c");
    generate(&strokes(), &c, &params(4, 12, None), false).unwrap();
    let tc = read_tree(&c);
    for (p, bytes) in &ta {
        if p.extension().is_some_and(|e| e == "png") {
            assert_ne!(bytes, &tc[p], "{}", p.display());
        }
    }
    let err = generate(&strokes(), &a, &params(4, 11, None), false).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
}

#[test]
fn limit_and_drawers_do_not_change_the_images_they_keep() {
    let tmp = tempfile::tempdir().unwrap();
    let (full, part) = (tmp.path().join("full"), tmp.path().join("part"));
    generate(&strokes(), &full, &params(5, 2, None), false).unwrap();
    let s = generate(&strokes(), &part, &params(3, 2, Some(3)), false).unwrap();
    assert_eq!(s.characters(), 3);
    let (tf, tp) = (read_tree(&full), read_tree(&part));
    let mut pngs = 0;
    for (p, bytes) in &tp {
        if p.extension().is_some_and(|e| e == "png") {
            assert_eq!(bytes, &tf[p], "{}", p.display());
            pngs += 1;
        }
    }
    assert_eq!(pngs, 9);
    // The first characters by stroke count, then code point: 一, then the 2-stroke ones.
    let tsv = String::from_utf8(tp[Path::new("characters.tsv")].clone()).unwrap();
    let chars: Vec<&str> = tsv
        .lines()
        .skip(1)
        .map(|l| l.split('\t').nth(3).unwrap())
        .collect();
    assert_eq!(chars, ["一", "二", "人"]);
}

// --- the command line ----------------------------------------------------------------------

#[test]
fn missing_source_is_one_line_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let (code, stdout, stderr) = bda(&[
        "data",
        "kanji",
        "--out",
        out.to_str().unwrap(),
        "--source",
        "/nonexistent",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent"), "{stderr}");
    assert!(
        stderr.contains("apt-get install python3-kanjidraw"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing written on error");
}

#[test]
fn bad_source_and_bad_flags_are_one_line_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.json");
    fs::write(&bad, "{\"1\": {\"a\": [[1, 2, 3]]}}").unwrap();
    let out = tmp.path().join("out");
    let out = out.to_str().unwrap();
    let (code, _, stderr) = bda(&[
        "data",
        "kanji",
        "--out",
        out,
        "--source",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("bad.json"), "{stderr}");
    for (flag, value) in [("--drawers", "0"), ("--limit", "0")] {
        let (code, _, stderr) = bda(&["data", "kanji", "--out", out, flag, value]);
        assert_eq!(code, 2, "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(&format!("{flag} 0")), "{stderr}");
    }
}

fn kanjidraw_installed() -> bool {
    if Path::new(KANJIDRAW_DATA).is_file() {
        true
    } else {
        println!("skipped: python3-kanjidraw not installed");
        false
    }
}

#[test]
fn end_to_end_on_the_real_package_reproduces_the_fixture() {
    if !kanjidraw_installed() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tiny");
    let args = [
        "data",
        "kanji",
        "--out",
        out.to_str().unwrap(),
        "--limit",
        "72",
        "--drawers",
        "6",
        "--seed",
        "0",
    ];
    let (code, stdout, stderr) = bda(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("72 characters"), "{stdout}");
    assert!(
        stderr.is_empty(),
        "no progress output when stderr is not a terminal: {stderr}"
    );
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/omniglot-tiny");
    let mut want = read_tree(&fixture);
    want.remove(Path::new("README.md")); // added by hand
    let got = read_tree(&out);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "file lists differ"
    );
    // README.txt names the bda version: compare it without that line, so that a version
    // bump does not call for a new fixture.
    let unversioned = |b: &[u8]| -> String {
        String::from_utf8_lossy(b)
            .lines()
            .filter(|l| !l.starts_with("Generated by `bda data kanji`"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for (p, bytes) in &want {
        if p == Path::new("README.txt") {
            assert_eq!(unversioned(&got[p]), unversioned(bytes), "README.txt");
        } else {
            assert!(got[p] == *bytes, "{} differs from the fixture", p.display());
        }
    }
    // Running again into the same folder is refused (exit 2, one line).
    let (code, _, stderr) = bda(&args);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
}

#[test]
fn end_to_end_on_the_real_package_other_seed() {
    if !kanjidraw_installed() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let out = tmp.path().join(name);
        let (code, _, stderr) = bda(&[
            "data",
            "kanji",
            "--out",
            out.to_str().unwrap(),
            "--limit",
            "300",
            "--drawers",
            "3",
            "--seed",
            "5",
        ]);
        assert_eq!(code, 0, "{stderr}");
        out
    };
    let (a, b) = (run("a"), run("b"));
    assert_eq!(read_tree(&a), read_tree(&b));
    let bg = load_omniglot(&a, Split::Background, true).unwrap();
    let ev = load_omniglot(&a, Split::Evaluation, true).unwrap();
    assert_eq!((bg.classes.len() + ev.classes.len()) / 4, 300);
    assert!(ev.classes.len() / 4 > 40, "{}", ev.classes.len());
}
