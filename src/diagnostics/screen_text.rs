//! Reading text off a screenshot, without OCR.
//!
//! A Linux text console (fbcon) and the VGA text mode both draw characters from the same
//! 8×16 bitmap font, pixel for pixel, on a fixed grid. So the screen can be read back exactly:
//! cut the picture into 8×16 cells, turn each cell into 16 bytes of "not background" bits and
//! look the bytes up in the font. The font is taken from the guest's own kernel image (the
//! `font_vga_8x16` data is found by the bitmap of its letter `A`), so it is the font the guest
//! draws with. VGA text mode (720×400, 9-pixel cells: the firmware, and the kernel's vgacon
//! until a framebuffer takes over) draws with the VGA BIOS's font, which differs from the
//! kernel's in a few glyphs (`m`, `v`, `0` …): its glyphs are added from QEMU's own VGA BIOS
//! image, found the same way.
//!
//! This is enough to recognise what matters for boot diagnostics — a kernel panic, a login
//! prompt — and to show the screen as text. Anti-aliased graphical screens are not read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::screenshot::Rgb;

/// The glyph of `A` (0x41) in the VGA 8×16 font.
const GLYPH_A: [u8; 16] = [
    0x00, 0x00, 0x10, 0x38, 0x6c, 0xc6, 0xc6, 0xfe, 0xc6, 0xc6, 0xc6, 0xc6, 0x00, 0x00, 0x00, 0x00,
];

pub struct Font {
    glyphs: HashMap<[u8; 16], char>,
}

/// QEMU's VGA BIOS for `-device VGA` (SeaVGABIOS), where Debian and QEMU's own builds put it.
const VGA_BIOS: &[&str] = &[
    "/usr/share/seabios/vgabios-stdvga.bin",
    "/usr/share/qemu/vgabios-stdvga.bin",
];

/// A cell differing from every glyph by more than this many pixels is unknown (`?`). Fonts
/// differ by a few pixels between the kernel and QEMU's VGA text mode (e.g. `m`, `0`).
const NEAR_BITS: u32 = 10;

impl Font {
    /// The 8×16 font inside a kernel image (ELF or raw); `None` if it is not there.
    pub fn from_image_bytes(data: &[u8]) -> Option<Font> {
        let at = data.windows(16).position(|w| w == GLYPH_A)?;
        let base = at.checked_sub(0x41 * 16)?;
        let table = data.get(base..base + 256 * 16)?;
        Some(Self::from_table(table))
    }

    /// A font from 256 glyphs of 16 bytes each (code page 437 order).
    pub fn from_table(table: &[u8]) -> Font {
        let mut glyphs = HashMap::new();
        for code in (0x21u8..0x7f).rev() {
            let g: [u8; 16] = table[code as usize * 16..][..16]
                .try_into()
                .unwrap_or([0; 16]);
            glyphs.insert(g, code as char);
        }
        Font { glyphs }
    }

    /// The character a cell shows: an exact glyph, else the nearest one if it is close.
    fn glyph(&self, bits: &[u8; 16]) -> char {
        if let Some(c) = self.glyphs.get(bits) {
            return *c;
        }
        let dist =
            |g: &[u8; 16]| -> u32 { g.iter().zip(bits).map(|(a, b)| (a ^ b).count_ones()).sum() };
        self.glyphs
            .iter()
            .map(|(g, c)| (dist(g), *c))
            .min()
            .filter(|(d, _)| *d <= NEAR_BITS)
            .map(|(_, c)| c)
            .unwrap_or('?')
    }

    /// `self`'s glyphs, plus those of `other` that `self` does not have.
    fn with(mut self, other: &Font) -> Font {
        for (g, c) in &other.glyphs {
            self.glyphs.entry(*g).or_insert(*c);
        }
        self
    }

    /// The VGA BIOS's font (`None` if no VGA BIOS image is installed).
    fn vga_bios() -> Option<Font> {
        VGA_BIOS
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .and_then(|d| Font::from_image_bytes(&d))
    }
}

/// The fonts read so far: the VGA BIOS's (read once) and each kernel's by path, with the
/// kernels being read now. One per VM manager, shared by its VMs' actors.
#[derive(Default)]
pub struct Fonts {
    bios: OnceLock<Option<Font>>,
    kernels: Mutex<HashMap<PathBuf, Option<Arc<Font>>>>,
    loading: Mutex<std::collections::HashSet<PathBuf>>,
}

impl Fonts {
    fn bios(&self) -> Option<&Font> {
        self.bios.get_or_init(Font::vga_bios).as_ref()
    }

    fn kernels(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Option<Arc<Font>>>> {
        self.kernels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts reading a kernel's font on a thread of its own, unless it is read or being read
    /// (finding it in a 30 MB kernel takes ~100 ms: a boot starts it, captures never wait).
    pub fn warm(self: &Arc<Self>, path: &Path) {
        if self.kernels().contains_key(path) {
            return;
        }
        let new = self
            .loading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_path_buf());
        if new {
            let (fonts, path) = (self.clone(), path.to_path_buf());
            let _ = std::thread::Builder::new()
                .name("font".into())
                .spawn(move || {
                    fonts.for_kernel(&path);
                });
        }
    }

    /// The kernel's font if it has been read, else the VGA BIOS's alone (what the firmware, the
    /// bootloader and the VGA text console draw with) while the kernel's is read in the
    /// background for the captures after this one. Never waits on the kernel file.
    pub fn for_kernel_now(self: &Arc<Self>, path: &Path) -> Option<Arc<Font>> {
        if let Some(f) = self.kernels().get(path) {
            return f.clone();
        }
        self.warm(path);
        self.bios().map(|b| {
            Arc::new(Font {
                glyphs: b.glyphs.clone(),
            })
        })
    }

    /// The font of a kernel file with the VGA BIOS's glyphs added, read once per path.
    pub fn for_kernel(&self, path: &Path) -> Option<Arc<Font>> {
        if let Some(f) = self.kernels().get(path) {
            return f.clone();
        }
        let kernel = std::fs::read(path)
            .ok()
            .and_then(|d| Font::from_image_bytes(&d));
        let font = match (kernel, self.bios()) {
            (Some(k), Some(b)) => Some(k.with(b)),
            (Some(k), None) => Some(k),
            (None, Some(b)) => Some(Font {
                glyphs: b.glyphs.clone(),
            }),
            (None, None) => None,
        }
        .map(Arc::new);
        self.kernels().insert(path.to_path_buf(), font.clone());
        font
    }
}

/// The screen as lines of text (trailing blanks trimmed; unknown cells as `?`).
pub fn read(img: &Rgb, font: &Font) -> Vec<String> {
    let (w, h) = (img.width as usize, img.height as usize);
    if w < 8 || h < 16 || img.pixels.len() < w * h * 3 {
        return vec![];
    }
    // VGA text mode is 80 columns of 9 pixels; everything else 8.
    let cw = if w == 720 { 9 } else { 8 };
    let px = |x: usize, y: usize| -> [u8; 3] {
        let i = (y * w + x) * 3;
        [img.pixels[i], img.pixels[i + 1], img.pixels[i + 2]]
    };
    let mut lines = Vec::with_capacity(h / 16);
    for row in 0..h / 16 {
        let mut line = String::with_capacity(w / cw);
        for col in 0..w / cw {
            let (x0, y0) = (col * cw, row * 16);
            // The cell's background is its top-left pixel: glyphs leave their first column
            // and first row blank, except for box-drawing characters (read as '?').
            let bg = px(x0, y0);
            let mut bits = [0u8; 16];
            for (r, b) in bits.iter_mut().enumerate() {
                for c in 0..8 {
                    if px(x0 + c, y0 + r) != bg {
                        *b |= 0x80 >> c;
                    }
                }
            }
            line.push(if bits == [0; 16] {
                ' '
            } else {
                font.glyph(&bits)
            });
        }
        lines.push(line.trim_end().to_string());
    }
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// What identifies a screen for change detection: its text without the cursor (which blinks),
/// or `None` when too little of it reads as text (then the pixels decide).
pub fn identity(lines: &[String]) -> Option<String> {
    let kept: Vec<&str> = lines
        .iter()
        .map(|l| l.trim_end_matches(['_', '?', ' ']))
        .filter(|l| !l.is_empty())
        .collect();
    let readable = kept
        .iter()
        .map(|l| l.chars().filter(|c| c.is_ascii_alphanumeric()).count())
        .sum::<usize>();
    (readable >= 8).then(|| kept.join("\n"))
}

/// What a screen shows, if it is something boot diagnostics cares about: `("panic", line)` or
/// `("login", line)`.
pub fn recognise(lines: &[String]) -> Option<(&'static str, String)> {
    if let Some(l) = lines.iter().find(|l| l.contains("Kernel panic")) {
        return Some(("panic", l.trim().to_string()));
    }
    // The prompt is the last non-empty line when the guest waits at it.
    // (The cursor after it reads as `_` or `?`.)
    let last = lines
        .iter()
        .map(|l| l.trim_end_matches(['_', '?', ' ']))
        .rfind(|l| !l.is_empty())?;
    // A kernel message may follow the prompt on its line; the prompt is `[host ]login:`.
    let at = last.find("login:")?;
    let host = last[..at].trim();
    (!host.contains(' ')).then(|| ("login", last[..at + 6].trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A made-up font where each printable glyph is distinct, and a screen drawn with it.
    fn font_table() -> Vec<u8> {
        let mut t = vec![0u8; 256 * 16];
        for code in 0x21..256usize {
            for r in 2..14 {
                // Column 0 and rows 0-1 stay blank, as in the real font.
                t[code * 16 + r] = ((code as u8).rotate_left(r as u32) & 0x7f) | 0x01;
            }
        }
        t[0x41 * 16..0x42 * 16].copy_from_slice(&GLYPH_A);
        t
    }

    fn draw(text: &[&str], w: usize, h: usize, cw: usize, table: &[u8]) -> Rgb {
        let mut pixels = vec![0u8; w * h * 3];
        for p in pixels.chunks_mut(3) {
            p.copy_from_slice(&[0, 0, 170]); // blue background
        }
        for (row, line) in text.iter().enumerate() {
            for (col, ch) in line.bytes().enumerate() {
                let g = &table[ch as usize * 16..][..16];
                for (r, bits) in g.iter().enumerate() {
                    for c in 0..8 {
                        if bits & (0x80 >> c) != 0 {
                            let (x, y) = (col * cw + c, row * 16 + r);
                            let i = (y * w + x) * 3;
                            pixels[i..i + 3].copy_from_slice(&[170, 170, 170]);
                        }
                    }
                }
            }
        }
        Rgb {
            width: w as u32,
            height: h as u32,
            pixels,
        }
    }

    #[test]
    fn vga_text_mode_reads_with_the_vga_bios_glyphs() {
        // The VGA BIOS QEMU ships (a dependency of qemu-system-x86) holds its font.
        let bios = VGA_BIOS
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .expect("QEMU's VGA BIOS (seabios) is installed");
        let at = bios.windows(16).position(|w| w == GLYPH_A).unwrap();
        let table = &bios[at - 0x41 * 16..][..256 * 16];
        let kernel = Font::from_table(&font_table());
        let text = [
            "Kernel panic - not syncing: VFS: Unable to mount root fs",
            "0123456789 vfmMX wxyz",
        ];
        let screen = draw(&text, 720, 400, 9, table);
        // The made-up "kernel" font alone reads little of it; with the BIOS's glyphs, all.
        assert_ne!(read(&screen, &kernel)[1], text[1]);
        let merged = Font::from_table(&font_table()).with(&Font::vga_bios().unwrap());
        assert_eq!(read(&screen, &merged), text.map(String::from).to_vec());
    }

    #[test]
    fn a_font_is_found_by_its_letter_a() {
        let mut image = vec![0x5au8; 10_000];
        image.extend_from_slice(&font_table());
        image.extend_from_slice(&[0x77; 500]);
        let f = Font::from_image_bytes(&image).unwrap();
        assert_eq!(f.glyphs.get(&GLYPH_A), Some(&'A'));
        assert!(Font::from_image_bytes(&[0u8; 5000]).is_none());
    }

    #[test]
    fn fbcon_and_vga_text_screens_read_back() {
        let t = font_table();
        let f = Font::from_table(&t);
        let text = [
            "[    1.234] Kernel panic - not syncing: No working init found.",
            "",
            "vm1 login:",
        ];
        for (w, h, cw) in [(1024, 768, 8), (720, 400, 9)] {
            let lines = read(&draw(&text, w, h, cw, &t), &f);
            assert_eq!(
                lines,
                text.iter().map(|s| s.to_string()).collect::<Vec<_>>()
            );
            let (what, line) = recognise(&lines).unwrap();
            assert_eq!(what, "panic");
            assert!(line.contains("No working init"));
        }
        // A glyph drawn a few pixels differently still reads as itself.
        let mut t2 = t.clone();
        t2[b'm' as usize * 16 + 5] ^= 0x18;
        let lines = read(&draw(&["mmm"], 640, 480, 8, &t2), &f);
        assert_eq!(lines, vec!["mmm".to_string()]);
        let lines = read(&draw(&["Debian", "vm1 login:"], 640, 480, 8, &t), &f);
        assert_eq!(recognise(&lines), Some(("login", "vm1 login:".to_string())));
        let with_cursor = ["vm1 login: _".to_string(), "?".to_string()];
        assert_eq!(
            recognise(&with_cursor),
            Some(("login", "vm1 login:".to_string()))
        );
        assert_eq!(recognise(&["booting".to_string()]), None);
    }
}
