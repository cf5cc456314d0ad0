//! Tests of the few-shot data layer: the Omniglot-layout reader on `fixtures/omniglot-tiny`
//! and on broken trees built in a temporary folder, and the episode sampler.

use std::fs;
use std::path::{Path, PathBuf};

use bda_host::fewshot::data::{
    EpisodeSampler, FewshotDataError, FewshotDataset, SIDE, Split, decode_grey, load_omniglot,
    rotate90,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/omniglot-tiny")
}

const D: usize = SIDE * SIDE;

/// Asserts the one-line contract and that the message names `what`; returns the message.
fn one_line(err: &FewshotDataError, what: &str) -> String {
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "message spans lines: {msg:?}");
    assert!(msg.contains(what), "message does not name {what:?}: {msg}");
    msg
}

// --- the fixture ---------------------------------------------------------------------------

#[test]
fn fixture_counts_and_values() {
    for (split, chars) in [(Split::Background, 50), (Split::Evaluation, 22)] {
        let ds = load_omniglot(&fixture(), split, false).unwrap();
        assert_eq!(ds.side, 28);
        assert_eq!(ds.classes.len(), chars, "{split}");
        assert_eq!(ds.num_images(), chars * 6);
        for c in &ds.classes {
            assert_eq!(c.n, 6, "{}", c.name);
            assert_eq!(c.images.len(), 6 * D);
            assert!(c.images.iter().all(|v| (0.0..=1.0).contains(v)));
            assert_eq!(c.name.matches('/').count(), 1, "{}", c.name);
            assert!(c.name.starts_with("strokes-"), "{}", c.name);
            for i in 0..c.n {
                let img = c.image(i).unwrap();
                // Strokes visible: some cells nearly full of ink, mean ink in a sane range.
                let mean = img.iter().sum::<f32>() / D as f32;
                let max = img.iter().cloned().fold(0.0, f32::max);
                assert!(
                    (0.003..0.35).contains(&mean),
                    "{} #{i}: mean ink {mean}",
                    c.name
                );
                assert!(max > 0.5, "{} #{i}: max ink {max}", c.name);
                // The white border of the drawing stays background.
                assert!(img[0] < 0.05 && img[D - 1] < 0.05, "{} #{i}", c.name);
            }
            assert!(c.image(6).is_none());
        }
        // Class names are sorted (folder order).
        let names: Vec<&str> = ds.classes.iter().map(|c| c.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }
}

#[test]
fn fixture_rotations_make_four_classes_per_character() {
    let plain = load_omniglot(&fixture(), Split::Background, false).unwrap();
    let rot = load_omniglot(&fixture(), Split::Background, true).unwrap();
    assert_eq!(rot.classes.len(), 4 * plain.classes.len());
    for (i, base) in plain.classes.iter().enumerate() {
        let four = &rot.classes[4 * i..4 * i + 4];
        assert_eq!(four[0], *base);
        for (k, deg) in [(1, "090"), (2, "180"), (3, "270")] {
            assert_eq!(four[k].name, format!("{}@rot{deg}", base.name));
            assert_eq!(four[k].n, base.n);
            for j in 0..base.n {
                let want = rotate90(four[k - 1].image(j).unwrap(), SIDE);
                assert_eq!(four[k].image(j).unwrap(), &want[..]);
            }
        }
    }
}

#[test]
fn resize_preserves_mean_ink_of_each_image() {
    // Area averaging keeps the mean: compare with the 105×105 source of the first class.
    let ds = load_omniglot(&fixture(), Split::Background, false).unwrap();
    let dir = fixture()
        .join("images_background")
        .join(&ds.classes[0].name);
    let (w, h, grey) = decode_grey(&fs::read(dir.join("01.png")).unwrap()).unwrap();
    assert_eq!((w, h), (105, 105));
    let src_mean = grey.iter().map(|&g| 1.0 - g as f64 / 255.0).sum::<f64>() / grey.len() as f64;
    let img = ds.classes[0].image(0).unwrap();
    let mean = img.iter().map(|&v| v as f64).sum::<f64>() / D as f64;
    assert!((mean - src_mean).abs() < 1e-5, "{mean} vs {src_mean}");
}

#[test]
fn loading_does_not_depend_on_the_thread_count() {
    let many = load_omniglot(&fixture(), Split::Evaluation, true).unwrap();
    let one = bda_host::threads::install(1, || {
        Ok(load_omniglot(&fixture(), Split::Evaluation, true).unwrap())
    })
    .unwrap();
    assert_eq!(many, one);
}

// --- pixel formats and sizes ---------------------------------------------------------------

/// Writes a PNG of the given format; `pixels` are already in that format's layout.
fn write_png(
    path: &Path,
    w: u32,
    h: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    pixels: &[u8],
    palette: Option<&[u8]>,
) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        if let Some(p) = palette {
            enc.set_palette(p.to_vec());
        }
        let mut wr = enc.write_header().unwrap();
        wr.write_image_data(pixels).unwrap();
    }
    fs::write(path, out).unwrap();
}

/// A black-and-white 105×105 test pattern: true = ink.
fn pattern(x: usize, y: usize) -> bool {
    (x / 7 + y / 5) % 3 == 0 || x == y
}

/// Writes the same pattern in many PNG formats, one character folder each.
fn write_format_zoo(split_dir: &Path) {
    let (w, h) = (105usize, 105usize);
    let bits: Vec<bool> = (0..h)
        .flat_map(|y| (0..w).map(move |x| pattern(x, y)))
        .collect();
    let a = split_dir.join("zoo");
    use png::{BitDepth as B, ColorType as C};
    // 8-bit grey.
    let g8: Vec<u8> = bits.iter().map(|&b| if b { 0 } else { 255 }).collect();
    write_png(
        &a.join("a-grey8/1.png"),
        105,
        105,
        C::Grayscale,
        B::Eight,
        &g8,
        None,
    );
    // 1-bit grey, rows padded to whole bytes, most significant bit first.
    let mut g1 = Vec::new();
    for row in bits.chunks(w) {
        for byte in row.chunks(8) {
            let mut v = 0u8;
            for (i, &b) in byte.iter().enumerate() {
                if !b {
                    v |= 0x80 >> i;
                }
            }
            g1.push(v);
        }
    }
    write_png(
        &a.join("b-grey1/1.png"),
        105,
        105,
        C::Grayscale,
        B::One,
        &g1,
        None,
    );
    // 16-bit grey, big-endian.
    let g16: Vec<u8> = g8.iter().flat_map(|&g| [g, g]).collect();
    write_png(
        &a.join("c-grey16/1.png"),
        105,
        105,
        C::Grayscale,
        B::Sixteen,
        &g16,
        None,
    );
    // RGB and RGBA (opaque), 8-bit.
    let rgb: Vec<u8> = g8.iter().flat_map(|&g| [g, g, g]).collect();
    write_png(
        &a.join("d-rgb/1.png"),
        105,
        105,
        C::Rgb,
        B::Eight,
        &rgb,
        None,
    );
    let rgba: Vec<u8> = g8.iter().flat_map(|&g| [g, g, g, 255]).collect();
    write_png(
        &a.join("e-rgba/1.png"),
        105,
        105,
        C::Rgba,
        B::Eight,
        &rgba,
        None,
    );
    // Grey + alpha: ink as opaque black, background as transparent (composited on white).
    let ga: Vec<u8> = bits
        .iter()
        .flat_map(|&b| if b { [0, 255] } else { [0, 0] })
        .collect();
    write_png(
        &a.join("f-grey-alpha/1.png"),
        105,
        105,
        C::GrayscaleAlpha,
        B::Eight,
        &ga,
        None,
    );
    // 8-bit palette: index 0 white, 1 black.
    let idx: Vec<u8> = bits.iter().map(|&b| b as u8).collect();
    write_png(
        &a.join("g-palette/1.png"),
        105,
        105,
        C::Indexed,
        B::Eight,
        &idx,
        Some(&[255, 255, 255, 0, 0, 0]),
    );
}

#[test]
fn all_png_formats_give_the_same_values() {
    let tmp = tempfile::tempdir().unwrap();
    write_format_zoo(&tmp.path().join("images_background"));
    let ds = load_omniglot(tmp.path(), Split::Background, false).unwrap();
    assert_eq!(ds.classes.len(), 7);
    let reference = &ds.classes[0].images;
    // The pattern has ink, and cells cut by the 3.75-pixel grid get fractional values.
    assert!(reference.iter().any(|&v| v > 0.0 && v < 1.0));
    for c in &ds.classes[1..] {
        let diff = c
            .images
            .iter()
            .zip(reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-6, "{}: max difference {diff}", c.name);
    }
}

#[test]
fn other_sizes_are_resized_and_tiny_ones_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let split = tmp.path().join("images_evaluation");
    let grey: Vec<u8> = (0..56 * 70)
        .map(|i| if i % 3 == 0 { 0 } else { 255 })
        .collect();
    let ok = split.join("abc/odd-size/1.png");
    write_png(
        &ok,
        56,
        70,
        png::ColorType::Grayscale,
        png::BitDepth::Eight,
        &grey,
        None,
    );
    let ds = load_omniglot(tmp.path(), Split::Evaluation, false).unwrap();
    assert_eq!(ds.classes[0].images.len(), D);
    let mean = ds.classes[0].images.iter().sum::<f32>() / D as f32;
    assert!((mean - 1.0 / 3.0).abs() < 0.01, "{mean}");

    let small = split.join("abc/small/1.png");
    write_png(
        &small,
        20,
        105,
        png::ColorType::Grayscale,
        png::BitDepth::Eight,
        &[255; 20 * 105],
        None,
    );
    let err = load_omniglot(tmp.path(), Split::Evaluation, false).unwrap_err();
    assert!(
        matches!(
            err,
            FewshotDataError::ImageSize {
                width: 20,
                height: 105,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = one_line(&err, "small/1.png");
    assert!(msg.contains("20×105") && msg.contains("28×28"), "{msg}");
    fs::remove_dir_all(small.parent().unwrap()).unwrap();

    // A header that claims a gigantic image is refused before anything is allocated.
    let huge = split.join("abc/huge/1.png");
    fs::create_dir_all(huge.parent().unwrap()).unwrap();
    fs::write(&huge, png_header_only(100_000, 100_000)).unwrap();
    let err = load_omniglot(tmp.path(), Split::Evaluation, false).unwrap_err();
    assert!(matches!(err, FewshotDataError::Png { .. }), "{err:?}");
    let msg = one_line(&err, "huge/1.png");
    assert!(msg.contains("100000×100000"), "{msg}");
}

/// The PNG signature, a valid IHDR chunk (8-bit grey) and an empty IDAT chunk.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut chunk = b"IHDR".to_vec();
    chunk.extend(w.to_be_bytes());
    chunk.extend(h.to_be_bytes());
    chunk.extend([8, 0, 0, 0, 0]); // depth 8, grey, deflate, adaptive filters, no interlace
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(13u32.to_be_bytes());
    out.extend(&chunk);
    out.extend(crc32(&chunk).to_be_bytes());
    // An empty IDAT, so that the decoder gets past the header.
    out.extend(0u32.to_be_bytes());
    out.extend(b"IDAT");
    out.extend(crc32(b"IDAT").to_be_bytes());
    out
}

// --- errors ----------------------------------------------------------------------------------

/// A valid tree: `chars` character folders of `n` copies of one fixture PNG.
fn tree(root: &Path, split: Split, chars: usize, n: usize) {
    let png = fs::read(fixture().join("images_background/strokes-01-02/u4e01/01.png")).unwrap();
    for c in 0..chars {
        let dir = root
            .join(split.folder())
            .join("alpha")
            .join(format!("c{c:02}"));
        fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            fs::write(dir.join(format!("{i:02}.png")), &png).unwrap();
        }
    }
}

#[test]
fn missing_root_and_missing_split() {
    let tmp = tempfile::tempdir().unwrap();
    let nowhere = tmp.path().join("nowhere");
    let err = load_omniglot(&nowhere, Split::Background, true).unwrap_err();
    assert!(matches!(err, FewshotDataError::MissingRoot { .. }));
    one_line(&err, "nowhere");

    tree(tmp.path(), Split::Background, 2, 2);
    let err = load_omniglot(tmp.path(), Split::Evaluation, true).unwrap_err();
    assert!(
        matches!(err, FewshotDataError::MissingSplit { .. }),
        "{err:?}"
    );
    let msg = one_line(&err, "images_evaluation");
    assert!(msg.contains("evaluation split"), "{msg}");
}

#[test]
fn empty_tree_and_empty_alphabet() {
    let tmp = tempfile::tempdir().unwrap();
    let split = tmp.path().join("images_background");
    fs::create_dir_all(&split).unwrap();
    fs::write(split.join("stray.txt"), "not a folder").unwrap();
    let err = load_omniglot(tmp.path(), Split::Background, false).unwrap_err();
    assert!(matches!(err, FewshotDataError::EmptyTree { .. }), "{err:?}");
    one_line(&err, "images_background");

    fs::create_dir_all(split.join("Lonely_alphabet")).unwrap();
    let err = load_omniglot(tmp.path(), Split::Background, false).unwrap_err();
    assert!(
        matches!(err, FewshotDataError::EmptyAlphabet { .. }),
        "{err:?}"
    );
    one_line(&err, "Lonely_alphabet");
}

#[test]
fn character_folder_without_pngs() {
    let tmp = tempfile::tempdir().unwrap();
    tree(tmp.path(), Split::Background, 3, 2);
    let dir = tmp.path().join("images_background/alpha/c99-empty");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("notes.txt"), "no images here").unwrap();
    let err = load_omniglot(tmp.path(), Split::Background, false).unwrap_err();
    assert!(matches!(err, FewshotDataError::NoImages { .. }), "{err:?}");
    one_line(&err, "c99-empty");
}

#[test]
fn corrupt_and_truncated_pngs() {
    let tmp = tempfile::tempdir().unwrap();
    tree(tmp.path(), Split::Background, 3, 2);
    let bad = tmp.path().join("images_background/alpha/c01/01.png");
    fs::write(
        &bad,
        b"this is not a PNG at all, just garbage bytes \x00\x01\x02",
    )
    .unwrap();
    let err = load_omniglot(tmp.path(), Split::Background, false).unwrap_err();
    assert!(matches!(err, FewshotDataError::Png { .. }), "{err:?}");
    let msg = one_line(&err, "c01/01.png");
    assert!(msg.contains("unreadable PNG"), "{msg}");

    // A real PNG cut in half: header fine, image data short.
    let good = fs::read(tmp.path().join("images_background/alpha/c00/00.png")).unwrap();
    fs::write(&bad, &good[..good.len() / 2]).unwrap();
    let err = load_omniglot(tmp.path(), Split::Background, false).unwrap_err();
    assert!(matches!(err, FewshotDataError::Png { .. }), "{err:?}");
    one_line(&err, "c01/01.png");
}

#[test]
fn the_first_bad_file_in_sorted_order_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    tree(tmp.path(), Split::Background, 6, 3);
    for c in ["c02", "c04"] {
        let p = tmp
            .path()
            .join(format!("images_background/alpha/{c}/01.png"));
        fs::write(p, b"garbage").unwrap();
    }
    for _ in 0..5 {
        let err = load_omniglot(tmp.path(), Split::Background, false).unwrap_err();
        one_line(&err, "c02/01.png");
    }
}

#[test]
fn too_few_samples_and_too_few_classes() {
    let tmp = tempfile::tempdir().unwrap();
    tree(tmp.path(), Split::Background, 4, 2);
    // One class with a single image.
    let lone = tmp.path().join("images_background/alpha/c03");
    fs::remove_file(lone.join("01.png")).unwrap();
    let ds = load_omniglot(tmp.path(), Split::Background, false).unwrap();
    assert_eq!(ds.classes[3].n, 1);
    let err = EpisodeSampler::new(&ds, 2, 1, 1).unwrap_err();
    assert!(
        matches!(err, FewshotDataError::TooFewSamples { n: 1, .. }),
        "{err:?}"
    );
    let msg = one_line(&err, "alpha/c03");
    assert!(
        msg.contains("--shots 1") && msg.contains("--queries 1"),
        "{msg}"
    );

    let ds = load_omniglot(tmp.path(), Split::Background, true).unwrap();
    let err = EpisodeSampler::new(&ds, 20, 1, 1).unwrap_err();
    assert!(
        matches!(
            err,
            FewshotDataError::TooFewClasses {
                ways: 20,
                classes: 16
            }
        ),
        "{err:?}"
    );
    let msg = one_line(&err, "--ways 20");
    assert!(msg.contains("16"), "{msg}");
    let cli: bda_host::error::CliError = err.into();
    assert_eq!(cli.exit_code(), 2);
    assert_eq!(cli.to_string(), msg);
}

#[test]
fn bad_episode_flags() {
    let ds = load_omniglot(&fixture(), Split::Evaluation, false).unwrap();
    for (ways, shots, queries, flag) in [
        (0, 1, 1, "--ways 0"),
        (300, 1, 1, "--ways 300"),
        (5, 0, 1, "--shots 0"),
        (5, 1, 0, "--queries 0"),
        (5, 3, 4, "--shots 3 + --queries 4"),
    ] {
        let err = EpisodeSampler::new(&ds, ways, shots, queries).unwrap_err();
        one_line(&err, flag);
    }
}

// --- episodes --------------------------------------------------------------------------------

/// Index of `img` among the images of `class` (images in the fixture are all distinct).
fn find(ds: &FewshotDataset, class: usize, img: &[f32]) -> usize {
    let c = &ds.classes[class];
    let hits: Vec<usize> = (0..c.n).filter(|&i| c.image(i).unwrap() == img).collect();
    assert_eq!(
        hits.len(),
        1,
        "image found {} times in {}",
        hits.len(),
        c.name
    );
    hits[0]
}

#[test]
fn episodes_are_deterministic_and_well_formed() {
    let ds = load_omniglot(&fixture(), Split::Background, true).unwrap();
    let (ways, shots, queries) = (5, 1, 5);
    let sampler = EpisodeSampler::new(&ds, ways, shots, queries).unwrap();
    let draw = |seed: u64, n: usize| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| sampler.sample(&mut rng)).collect::<Vec<_>>()
    };
    let a = draw(7, 20);
    assert_eq!(a, draw(7, 20));
    assert_ne!(a, draw(8, 20));

    let mut unsorted = 0;
    for ep in &a {
        let t = &ep.task;
        assert_eq!(t.ways, ways);
        assert_eq!(t.support.len(), ways * shots * D);
        assert_eq!(t.query.len(), ways * queries * D);
        let want = |per: usize| -> Vec<u8> {
            (0..ways as u8)
                .flat_map(|k| std::iter::repeat_n(k, per))
                .collect()
        };
        assert_eq!(t.support_labels, want(shots));
        assert_eq!(t.query_labels, want(queries));
        let mut classes = ep.classes.clone();
        classes.sort();
        classes.dedup();
        assert_eq!(
            classes.len(),
            ways,
            "classes not distinct: {:?}",
            ep.classes
        );
        if ep.classes.windows(2).any(|w| w[0] > w[1]) {
            unsorted += 1;
        }
        for (k, &c) in ep.classes.iter().enumerate() {
            let s: Vec<usize> = (0..shots)
                .map(|j| {
                    find(
                        &ds,
                        c,
                        &t.support[(k * shots + j) * D..(k * shots + j + 1) * D],
                    )
                })
                .collect();
            let q: Vec<usize> = (0..queries)
                .map(|j| {
                    find(
                        &ds,
                        c,
                        &t.query[(k * queries + j) * D..(k * queries + j + 1) * D],
                    )
                })
                .collect();
            let mut all: Vec<usize> = s.iter().chain(&q).copied().collect();
            all.sort();
            all.dedup();
            assert_eq!(
                all.len(),
                shots + queries,
                "support/query overlap: {s:?} {q:?}"
            );
        }
    }
    // Labels are assigned in a random class order.
    assert!(
        unsorted > 10,
        "{unsorted} of 20 episodes had shuffled classes"
    );
}

#[test]
fn every_class_and_image_gets_drawn() {
    let ds = load_omniglot(&fixture(), Split::Evaluation, false).unwrap();
    let sampler = EpisodeSampler::new(&ds, 5, 2, 3).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut seen = vec![0usize; ds.classes.len()];
    for _ in 0..400 {
        for &c in &sampler.sample(&mut rng).classes {
            seen[c] += 1;
        }
    }
    // 400 · 5 / 22 ≈ 91 per class.
    assert!(seen.iter().all(|&n| (50..140).contains(&n)), "{seen:?}");
}

/// Timing of a full load; run with
/// `BDA_OMNIGLOT_DIR=/path cargo test --release --test fewshot_data -- --ignored --nocapture`.
#[test]
#[ignore = "needs BDA_OMNIGLOT_DIR pointing at a full Omniglot-layout tree"]
fn load_speed_on_a_full_tree() {
    let Some(dir) = std::env::var_os("BDA_OMNIGLOT_DIR") else {
        println!("skipped: BDA_OMNIGLOT_DIR not set");
        return;
    };
    for split in [Split::Background, Split::Evaluation] {
        let t = std::time::Instant::now();
        let ds = load_omniglot(Path::new(&dir), split, true).unwrap();
        println!(
            "{split}: {} classes (with rotations), {} images, loaded in {:.2} s on {} threads",
            ds.classes.len(),
            ds.num_images(),
            t.elapsed().as_secs_f64(),
            rayon::current_num_threads()
        );
    }
}
