//! Image classification datasets in memory: an [`ImageSet`] of equally sized, normalised RGB images
//! with class labels, and [`read_image_folder`], a reader for the "ImageFolder" layout (one
//! sub-folder per class, e.g. `train/0_real/*.jpg`, `train/1_fake/*.jpg`) that torchvision uses.
//!
//! Every image is decoded (JPEG or PNG, detected from the content, so a mislabelled extension still
//! reads), converted to RGB, resized so that its shorter side is `size` (triangle filter, which
//! averages properly when shrinking), centre-cropped to `size × size` and normalised per channel to
//! `(x / 255 − mean) / std`. Files and classes are sorted, and decoding runs in parallel with the
//! results kept in file order, so a folder always gives the same set.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use image::imageops::FilterType;
use rayon::prelude::*;

/// Equally sized RGB images with class labels, held in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    /// Side of every image: images are `size × size`.
    pub size: u32,
    /// `len() × 3 × size × size` values, each image channel-major (CHW), normalised as
    /// `(x / 255 − mean) / std`.
    pub pixels: Vec<f32>,
    /// Class index of each image: the position of its class in `classes`.
    pub labels: Vec<u32>,
    /// Class names, sorted (the class folder names for [`read_image_folder`]).
    pub classes: Vec<String>,
    /// Each image's path relative to the split folder, with `/` separators, e.g. `1_fake/00012.png`.
    pub files: Vec<String>,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set holds no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image: `3 × size × size`.
    pub fn image_len(&self) -> usize {
        3 * self.size as usize * self.size as usize
    }

    /// The normalised CHW values of image `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        let d = self.image_len();
        &self.pixels[i * d..(i + 1) * d]
    }

    /// RGB bytes of image `i`, row-major and interleaved (HWC, as image files store them),
    /// un-normalised with the `mean` and `std` it was normalised with (for figures).
    pub fn rgb(&self, i: usize, mean: [f32; 3], std: [f32; 3]) -> Vec<u8> {
        let img = self.image(i);
        let plane = self.size as usize * self.size as usize;
        let mut out = vec![0u8; 3 * plane];
        for c in 0..3 {
            for (p, &v) in img[c * plane..(c + 1) * plane].iter().enumerate() {
                out[3 * p + c] = to_byte((v * std[c] + mean[c]) * 255.0);
            }
        }
        out
    }

    /// Images per class, indexed by label, `classes.len()` long.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &c in &self.labels {
            counts[c as usize] += 1;
        }
        counts
    }
}

/// Rounds and clamps a 0–255 value to a byte.
pub(crate) fn to_byte(v: f32) -> u8 {
    // `as` saturates, and NaN becomes 0.
    (v + 0.5).floor() as u8
}

/// How [`read_image_folder`] prepares images.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// Output side: images become `size × size`.
    pub size: u32,
    /// Per-channel (R, G, B) mean subtracted from `x / 255`.
    pub mean: [f32; 3],
    /// Per-channel (R, G, B) standard deviation that `x / 255 − mean` is divided by.
    pub std: [f32; 3],
    /// Skip (and count) files that cannot be read or decoded instead of failing.
    pub skip_unreadable: bool,
}

/// The ImageNet channel statistics that pretrained models expect.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// See [`IMAGENET_MEAN`].
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

impl LoadOptions {
    /// `size × size` images with ImageNet normalisation; unreadable files are errors.
    pub fn new(size: u32) -> Self {
        LoadOptions {
            size,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            skip_unreadable: false,
        }
    }
}

/// File extensions read as images (compared case-insensitively).
const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Reads one split folder (e.g. `data/faces/train`) holding one sub-folder per class.
///
/// Class folders are the sub-folders, sorted by name; a class's label is its
/// position in that order. Images are the `*.jpg`, `*.jpeg` and `*.png` files (any case) anywhere
/// below a class folder, sorted by path; other files, and names starting with `.`, are ignored. Each is resized so its shorter
/// side is `opts.size`, centre-cropped to `size × size` and normalised with `opts.mean`/`opts.std`.
///
/// Returns the set and the number of files skipped as unreadable (always 0 unless
/// `opts.skip_unreadable`).
///
/// # Errors
/// A missing split folder, no class folders, a class folder without images, a zero size or
/// standard deviation, or — without `skip_unreadable` — a file that cannot be read or decoded
/// (the error names it). Also if nothing readable is left after skipping.
pub fn read_image_folder(split_dir: &Path, opts: &LoadOptions) -> Result<(ImageSet, usize)> {
    if opts.size == 0 {
        bail!("image size must be positive");
    }
    if opts.std.iter().any(|&s| !(s.is_finite() && s > 0.0)) {
        bail!(
            "normalisation std must be positive and finite, got {:?}",
            opts.std
        );
    }
    if !split_dir.is_dir() {
        bail!(
            "image folder {} does not exist or is not a folder",
            split_dir.display()
        );
    }

    let (class_dirs, stray) = list_dir(split_dir)?;
    if class_dirs.is_empty() {
        let stray: Vec<String> = stray.into_iter().map(|(name, _)| name).collect();
        bail!(
            "image folder {} has no class sub-folders (expected e.g. 0_real/ and 1_fake/); found {}",
            split_dir.display(),
            describe(&stray)
        );
    }

    // (relative path, absolute path, label) of every image, in class then path order.
    let mut entries: Vec<(String, PathBuf, u32)> = Vec::new();
    for (label, (class, class_dir)) in class_dirs.iter().enumerate() {
        let mut found = Vec::new();
        let mut others = Vec::new();
        collect_images(class_dir, class, &mut found, &mut others)?;
        if found.is_empty() {
            bail!(
                "class folder {} has no images (*.jpg, *.jpeg, *.png); found {}",
                class_dir.display(),
                describe(&others)
            );
        }
        found.sort();
        let label = u32::try_from(label).context("too many class folders")?;
        entries.extend(found.into_iter().map(|(rel, path)| (rel, path, label)));
    }

    let size = opts.size;
    let decoded: Vec<Result<Vec<f32>>> = entries
        .par_iter()
        .map(|(_, path, _)| load_one(path, opts))
        .collect();

    let d = 3 * size as usize * size as usize;
    let mut set = ImageSet {
        size,
        pixels: Vec::with_capacity(entries.len() * d),
        labels: Vec::with_capacity(entries.len()),
        classes: class_dirs.into_iter().map(|(name, _)| name).collect(),
        files: Vec::with_capacity(entries.len()),
    };
    let mut skipped = 0;
    for ((rel, _, label), img) in entries.into_iter().zip(decoded) {
        match img {
            Ok(img) => {
                set.pixels.extend_from_slice(&img);
                set.labels.push(label);
                set.files.push(rel);
            }
            Err(_) if opts.skip_unreadable => skipped += 1,
            Err(e) => return Err(e),
        }
    }
    if set.is_empty() {
        bail!(
            "none of the {skipped} images in {} could be read",
            split_dir.display()
        );
    }
    Ok((set, skipped))
}

/// A directory entry: its name (lossy UTF-8, for labels and messages) and its full path.
type Entry = (String, PathBuf);

/// The visible sub-folders of `dir` and its other visible entries, each sorted by name. Names
/// starting with `.` are left out (`.DS_Store`, macOS `._x.jpg` resource forks, `.git`).
fn list_dir(dir: &Path) -> Result<(Vec<Entry>, Vec<Entry>)> {
    let mut folders = Vec::new();
    let mut others = Vec::new();
    let read = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in read {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // `is_dir` follows symbolic links, so linked class folders count.
        if path.is_dir() {
            folders.push((name, path));
        } else {
            others.push((name, path));
        }
    }
    folders.sort();
    others.sort();
    Ok((folders, others))
}

/// Adds the images below `dir` to `found` as (path relative to the split folder, full path), and
/// the relative paths of other files to `others`. `rel` is `dir` relative to the split folder.
fn collect_images(
    dir: &Path,
    rel: &str,
    found: &mut Vec<Entry>,
    others: &mut Vec<String>,
) -> Result<()> {
    let (folders, files) = list_dir(dir)?;
    for (name, path) in files {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        if ext.is_some_and(|e| EXTENSIONS.contains(&e.as_str())) {
            found.push((format!("{rel}/{name}"), path));
        } else {
            others.push(format!("{rel}/{name}"));
        }
    }
    for (name, path) in folders {
        collect_images(&path, &format!("{rel}/{name}"), found, others)?;
    }
    Ok(())
}

/// "nothing" or a short list of names, for error messages.
fn describe(names: &[String]) -> String {
    const SHOWN: usize = 8;
    match names.len() {
        0 => "nothing".to_string(),
        n if n <= SHOWN => names.join(", "),
        n => format!("{}, … ({n} entries)", names[..SHOWN].join(", ")),
    }
}

/// Largest image side accepted, in pixels.
const MAX_SIDE: u32 = 16_384;
/// Largest decoded image, in bytes.
const MAX_DECODED_BYTES: u64 = 1 << 30;
/// Largest image file read.
const MAX_FILE_BYTES: u64 = 256 << 20;

/// Decodes, resizes, crops and normalises one image file to CHW values.
fn load_one(path: &Path, opts: &LoadOptions) -> Result<Vec<f32>> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size > MAX_FILE_BYTES {
        bail!(
            "{}: {size} bytes; image files above {} MiB are refused",
            path.display(),
            MAX_FILE_BYTES >> 20
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut reader = image::io::Reader::new(Cursor::new(bytes))
        .with_guessed_format()
        .with_context(|| format!("reading {}", path.display()))?;
    // The header's dimensions are checked before any pixel buffer is allocated.
    let mut limits = image::io::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| {
        let limit = matches!(e, image::ImageError::Limits(_));
        anyhow::Error::new(e).context(if limit {
            format!(
                "decoding image {}: larger than {MAX_SIDE} × {MAX_SIDE} pixels or {} MiB decoded; refused",
                path.display(),
                MAX_DECODED_BYTES >> 20
            )
        } else {
            format!("decoding image {}", path.display())
        })
    })?
        .to_rgb8();
    let rgb = resize_and_crop(img, opts.size);

    let s = opts.size as usize;
    let plane = s * s;
    let mut out = vec![0f32; 3 * plane];
    for (p, px) in rgb.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + p] = (f32::from(px.0[c]) / 255.0 - opts.mean[c]) / opts.std[c];
        }
    }
    Ok(out)
}

/// Scales `img` so that its shorter side is `size` and cuts the central `size × size` square.
fn resize_and_crop(img: image::RgbImage, size: u32) -> image::RgbImage {
    let (w, h) = img.dimensions();
    if (w, h) == (size, size) {
        return img;
    }
    let short = w.min(h).max(1);
    // The longer side, rounded, but never below `size` so the crop fits.
    let scale = |side: u32| -> u32 {
        let v = (u64::from(side) * u64::from(size) + u64::from(short) / 2) / u64::from(short);
        u32::try_from(v).unwrap_or(u32::MAX).max(size)
    };
    let (nw, nh) = (scale(w), scale(h));
    let resized = if (nw, nh) == (w, h) {
        img
    } else {
        image::imageops::resize(&img, nw, nh, FilterType::Triangle)
    };
    let (x, y) = ((nw - size) / 2, (nh - size) / 2);
    image::imageops::crop_imm(&resized, x, y, size, size).to_image()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    const MEAN: [f32; 3] = [0.5, 0.25, 0.0];
    const STD: [f32; 3] = [0.5, 0.25, 1.0];

    fn opts(size: u32) -> LoadOptions {
        LoadOptions {
            size,
            mean: MEAN,
            std: STD,
            skip_unreadable: false,
        }
    }

    fn solid(w: u32, h: u32, c: [u8; 3]) -> RgbImage {
        RgbImage::from_pixel(w, h, Rgb(c))
    }

    /// A split folder with two classes ("b_cls" written first to check sorting).
    fn small_folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        for class in ["b_cls", "a_cls"] {
            std::fs::create_dir(root.join(class)).expect("mkdir");
        }
        solid(4, 4, [255, 0, 10])
            .save(root.join("a_cls/x.png"))
            .expect("save");
        solid(4, 4, [0, 128, 255])
            .save(root.join("a_cls/y.PNG"))
            .expect("save");
        solid(6, 4, [10, 20, 30])
            .save(root.join("b_cls/z.jpg"))
            .expect("save");
        std::fs::write(root.join("a_cls/notes.txt"), "not an image").expect("write");
        // Hidden files and folders (macOS metadata) are not images or classes.
        std::fs::write(root.join("a_cls/._x.png"), "resource fork").expect("write");
        std::fs::create_dir(root.join(".cache")).expect("mkdir");
        dir
    }

    #[test]
    fn loads_normalises_and_labels_by_sorted_class() {
        let dir = small_folder();
        let (set, skipped) = read_image_folder(dir.path(), &opts(4)).expect("load");
        assert_eq!(skipped, 0);
        assert_eq!(set.classes, ["a_cls", "b_cls"]);
        assert_eq!(set.files, ["a_cls/x.png", "a_cls/y.PNG", "b_cls/z.jpg"]);
        assert_eq!(set.labels, [0, 0, 1]);
        assert_eq!(set.len(), 3);
        assert_eq!(set.pixels.len(), 3 * 3 * 16);
        assert_eq!(set.class_counts(), [2, 1]);
        // Image 0 is solid (255, 0, 10): every value of channel c is (v/255 − mean) / std.
        let img = set.image(0);
        let want = [(1.0 - 0.5) / 0.5, (0.0 - 0.25) / 0.25, 10.0 / 255.0];
        for c in 0..3 {
            for &v in &img[c * 16..(c + 1) * 16] {
                assert!(
                    (v - want[c]).abs() < 1e-6,
                    "channel {c}: {v} vs {}",
                    want[c]
                );
            }
        }
        assert_eq!(&set.rgb(1, MEAN, STD)[..3], &[0, 128, 255]);
        // JPEG is lossy on a solid colour only by a level or two.
        let px = &set.rgb(2, MEAN, STD)[..3];
        for (got, want) in px.iter().zip([10u8, 20, 30]) {
            assert!(got.abs_diff(want) <= 3, "{px:?}");
        }
    }

    #[test]
    fn resizes_shorter_side_and_crops_centre() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("c")).expect("mkdir");
        // 30 × 10: left third red, middle green, right third blue. Shorter side 10 → 5 gives
        // 15 × 5, whose centre 5 × 5 is the green third.
        let img = RgbImage::from_fn(30, 10, |x, _| match x / 10 {
            0 => Rgb([255, 0, 0]),
            1 => Rgb([0, 255, 0]),
            _ => Rgb([0, 0, 255]),
        });
        img.save(dir.path().join("c/wide.png")).expect("save");
        let (set, _) = read_image_folder(dir.path(), &opts(5)).expect("load");
        assert_eq!(set.size, 5);
        assert_eq!(set.image(0).len(), 3 * 25);
        let rgb = set.rgb(0, MEAN, STD);
        // The middle column is pure green; edges blend slightly with the neighbours.
        for y in 0..5 {
            assert_eq!(&rgb[(y * 5 + 2) * 3..(y * 5 + 2) * 3 + 3], &[0, 255, 0]);
        }
        // A tall image works the same way.
        let tall = solid(7, 21, [9, 9, 9]);
        tall.save(dir.path().join("c/tall.png")).expect("save");
        let (set, _) = read_image_folder(dir.path(), &opts(5)).expect("load");
        assert_eq!(set.len(), 2);
        assert_eq!(set.pixels.len(), 2 * 75);
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it_or_skipped_and_counted() {
        let dir = small_folder();
        std::fs::write(
            dir.path().join("b_cls/broken.jpg"),
            b"\xff\xd8\xffnot really",
        )
        .expect("w");
        let err = read_image_folder(dir.path(), &opts(4)).expect_err("corrupt file");
        let msg = format!("{err:#}");
        assert!(msg.contains("broken.jpg"), "{msg}");

        let skip = LoadOptions {
            skip_unreadable: true,
            ..opts(4)
        };
        let (set, skipped) = read_image_folder(dir.path(), &skip).expect("load");
        assert_eq!(skipped, 1);
        assert_eq!(set.len(), 3);
        assert!(!set.files.iter().any(|f| f.contains("broken")));
    }

    #[test]
    fn missing_and_empty_folders_are_clear_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("nope");
        let msg = format!(
            "{:#}",
            read_image_folder(&missing, &opts(4)).expect_err("missing")
        );
        assert!(
            msg.contains("does not exist") && msg.contains("nope"),
            "{msg}"
        );

        std::fs::write(dir.path().join("stray.png"), b"x").expect("write");
        let msg = format!(
            "{:#}",
            read_image_folder(dir.path(), &opts(4)).expect_err("no classes")
        );
        assert!(
            msg.contains("no class sub-folders") && msg.contains("stray.png"),
            "{msg}"
        );

        std::fs::create_dir(dir.path().join("0_real")).expect("mkdir");
        std::fs::write(dir.path().join("0_real/readme.md"), b"x").expect("write");
        let msg = format!(
            "{:#}",
            read_image_folder(dir.path(), &opts(4)).expect_err("empty class")
        );
        assert!(msg.contains("0_real") && msg.contains("no images"), "{msg}");
        assert!(msg.contains("readme.md"), "{msg}");

        let msg = format!(
            "{:#}",
            read_image_folder(dir.path(), &opts(0)).expect_err("size 0")
        );
        assert!(msg.contains("size"), "{msg}");
    }

    #[test]
    fn all_unreadable_is_an_error_even_when_skipping() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("c")).expect("mkdir");
        std::fs::write(dir.path().join("c/a.png"), b"garbage").expect("write");
        let skip = LoadOptions {
            skip_unreadable: true,
            ..opts(4)
        };
        let msg = format!(
            "{:#}",
            read_image_folder(dir.path(), &skip).expect_err("nothing")
        );
        assert!(msg.contains("could be read"), "{msg}");
    }
}
