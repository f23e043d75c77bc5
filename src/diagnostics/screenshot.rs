//! Screenshots of a VM's display. QEMU's `screendump` writes a PPM (P6); it is turned into the
//! cloud's `{vm}.{vmId}.screenshot.bmp` and a PNG beside it, each replaced whole (temp file +
//! rename), so a reader never sees half a picture.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ShotError {
    #[error("not a P6 PPM image: {0}")]
    Ppm(&'static str),
    #[error("writing the screenshot")]
    Io(#[from] std::io::Error),
    #[error("encoding the PNG")]
    Png(#[from] png::EncodingError),
}

/// An RGB picture.
pub struct Rgb {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// Parses a binary PPM (P6, maxval 255), as QEMU's screendump writes it.
pub fn parse_ppm(data: &[u8]) -> Result<Rgb, ShotError> {
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while i < data.len() && data[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < data.len() && data[i] == b'#' {
            while i < data.len() && data[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        while i < data.len() && !data[i].is_ascii_whitespace() {
            i += 1;
        }
        if start == i {
            return Err(ShotError::Ppm("truncated header"));
        }
        fields.push(&data[start..i]);
    }
    i += 1; // the single whitespace after maxval
    if fields[0] != b"P6" {
        return Err(ShotError::Ppm("magic is not P6"));
    }
    let num = |f: &[u8]| {
        std::str::from_utf8(f)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
    };
    let (w, h, max) = match (num(fields[1]), num(fields[2]), num(fields[3])) {
        (Some(w), Some(h), Some(m)) => (w, h, m),
        _ => return Err(ShotError::Ppm("bad dimensions")),
    };
    if max != 255 || w == 0 || h == 0 || w > 16384 || h > 16384 {
        return Err(ShotError::Ppm("unsupported size or depth"));
    }
    let len = (w as usize) * (h as usize) * 3;
    let pixels = data
        .get(i..i + len)
        .ok_or(ShotError::Ppm("truncated pixels"))?
        .to_vec();
    Ok(Rgb {
        width: w,
        height: h,
        pixels,
    })
}

/// A 24-bit bottom-up BMP.
pub fn to_bmp(img: &Rgb) -> Vec<u8> {
    let row = (img.width as usize * 3).div_ceil(4) * 4;
    let size = 54 + row * img.height as usize;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(b"BM");
    out.extend_from_slice(&(size as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&54u32.to_le_bytes());
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&(img.width as i32).to_le_bytes());
    out.extend_from_slice(&(img.height as i32).to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&24u16.to_le_bytes());
    out.extend_from_slice(&[0u8; 24]);
    let w = img.width as usize;
    out.resize(size, 0);
    for (i, y) in (0..img.height as usize).rev().enumerate() {
        let src = &img.pixels[y * w * 3..(y + 1) * w * 3];
        let dst = &mut out[54 + i * row..54 + i * row + w * 3];
        for (d, s) in dst.chunks_exact_mut(3).zip(src.chunks_exact(3)) {
            d[0] = s[2];
            d[1] = s[1];
            d[2] = s[0];
        }
    }
    out
}

/// An 8-bit bottom-up BMP with a colour table: a third of the 24-bit file for a console screen.
fn to_bmp8(img: &Rgb, palette: &[u8], index: &[u8]) -> Vec<u8> {
    let colours = palette.len() / 3;
    let row = (img.width as usize).div_ceil(4) * 4;
    let offset = 54 + 4 * colours;
    let size = offset + row * img.height as usize;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(b"BM");
    out.extend_from_slice(&(size as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(offset as u32).to_le_bytes());
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&(img.width as i32).to_le_bytes());
    out.extend_from_slice(&(img.height as i32).to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&8u16.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]); // BI_RGB
    out.extend_from_slice(&((row * img.height as usize) as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 8]); // resolution
    out.extend_from_slice(&(colours as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for c in palette.chunks_exact(3) {
        out.extend_from_slice(&[c[2], c[1], c[0], 0]);
    }
    let w = img.width as usize;
    out.resize(size, 0);
    for (i, y) in (0..img.height as usize).rev().enumerate() {
        out[offset + i * row..offset + i * row + w].copy_from_slice(&index[y * w..(y + 1) * w]);
    }
    out
}

/// The picture as palette indexes, if it has at most 256 colours (a text console has 16): a
/// third of the bytes to filter and compress, and a smaller file.
fn indexed(img: &Rgb) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut palette: Vec<[u8; 3]> = Vec::with_capacity(16);
    let mut index = Vec::with_capacity(img.pixels.len() / 3);
    // A direct-mapped cache of colour → index in front of the palette search.
    let mut cache = vec![([0u8; 3], u16::MAX); 1024];
    for px in img.pixels.chunks_exact(3) {
        let c = [px[0], px[1], px[2]];
        let slot = (usize::from(c[0]) * 31 + usize::from(c[1]) * 17 + usize::from(c[2])) & 1023;
        let i = match cache[slot] {
            (cc, i) if i != u16::MAX && cc == c => i as u8,
            _ => {
                let i = match palette.iter().position(|p| *p == c) {
                    Some(i) => i,
                    None if palette.len() < 256 => {
                        palette.push(c);
                        palette.len() - 1
                    }
                    None => return None,
                };
                cache[slot] = (c, i as u16);
                i as u8
            }
        };
        index.push(i);
    }
    Some((palette.concat(), index))
}

#[cfg(test)]
fn to_png(img: &Rgb) -> Result<Vec<u8>, ShotError> {
    png_of(img, indexed(img).as_ref())
}

fn png_of(img: &Rgb, paletted: Option<&(Vec<u8>, Vec<u8>)>) -> Result<Vec<u8>, ShotError> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, img.width, img.height);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        match paletted {
            Some((palette, index)) => {
                enc.set_color(png::ColorType::Indexed);
                enc.set_palette(palette.clone());
                let mut w = enc.write_header()?;
                w.write_image_data(index)?;
            }
            None => {
                enc.set_color(png::ColorType::Rgb);
                let mut w = enc.write_header()?;
                w.write_image_data(&img.pixels)?;
            }
        }
    }
    Ok(out)
}

/// Turns QEMU's PPM into a BMP and a PNG (atomic writes); returns the picture.
pub fn store(ppm: &Path, bmp: &Path, png_path: &Path) -> Result<Rgb, ShotError> {
    let img = parse_ppm(&std::fs::read(ppm)?)?;
    // Replaced whole (a reader never sees half a picture), not synced: the next capture
    // overwrites them, and syncing four times per capture made captures wait on the disk.
    // A console screen (≤ 256 colours) is stored with a palette in both files.
    let paletted = indexed(&img);
    let bmp_bytes = match &paletted {
        Some((palette, index)) => to_bmp8(&img, palette, index),
        None => to_bmp(&img),
    };
    crate::storage::fsutil::replace_file(bmp, &bmp_bytes, 0o644)?;
    crate::storage::fsutil::replace_file(png_path, &png_of(&img, paletted.as_ref())?, 0o644)?;
    Ok(img)
}

/// A hash of the picture's size and pixels (identical frames are collapsed by it).
pub fn hash(img: &Rgb) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (img.width, img.height).hash(&mut h);
    img.pixels.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ppm(w: u32, h: u32) -> Vec<u8> {
        let mut v = format!("P6\n# qemu\n{w} {h}\n255\n").into_bytes();
        for i in 0..w * h {
            v.extend_from_slice(&[(i % 256) as u8, 10, 200]);
        }
        v
    }

    #[test]
    fn ppm_to_bmp_and_png() {
        let img = parse_ppm(&ppm(3, 2)).unwrap();
        assert_eq!((img.width, img.height, img.pixels.len()), (3, 2, 18));
        let bmp = to_bmp(&img);
        assert_eq!(&bmp[..2], b"BM");
        assert_eq!(bmp.len(), 54 + 12 * 2); // rows padded to 4 bytes
                                            // bottom-up, BGR: the first stored pixel is (0, 1) = index 3
        assert_eq!(&bmp[54..57], &[200, 10, 3]);
        let png = to_png(&img).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }

    fn decode(png: &[u8]) -> (u32, u32, Vec<u8>) {
        let mut d = png::Decoder::new(png);
        d.set_transformations(png::Transformations::EXPAND);
        let mut r = d.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size()];
        let info = r.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    #[test]
    fn pngs_hold_exactly_the_pixels_with_a_palette_or_without() {
        // A console-like screen (16 colours) is stored with a palette; a picture of many
        // colours as RGB; both decode to the same pixels.
        let (w, h) = (1280u32, 800u32);
        let console: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                let c = ((i / 7) % 16) as u8;
                [c * 16, 170 - c, c]
            })
            .collect();
        let many: Vec<u8> = (0..w * h)
            .flat_map(|i| [(i % 251) as u8, (i / 251 % 256) as u8, (i % 7) as u8])
            .collect();
        for (pixels, paletted) in [(console, true), (many, false)] {
            let img = Rgb {
                width: w,
                height: h,
                pixels,
            };
            let png = to_png(&img).unwrap();
            assert_eq!(indexed(&img).is_some(), paletted);
            assert_eq!(decode(&png), (w, h, img.pixels.clone()));
            if let Some((palette, index)) = indexed(&img) {
                // The 8-bit BMP holds the same pixels: colour table + bottom-up padded rows.
                let bmp = to_bmp8(&img, &palette, &index);
                let off = u32::from_le_bytes(bmp[10..14].try_into().unwrap()) as usize;
                assert_eq!(u16::from_le_bytes([bmp[28], bmp[29]]), 8);
                let table = &bmp[54..off];
                let row = (w as usize).div_ceil(4) * 4;
                for y in [0usize, 1, 399, 799] {
                    for x in [0usize, 5, 640, 1279] {
                        let i = bmp[off + (h as usize - 1 - y) * row + x] as usize;
                        let px = &img.pixels[(y * w as usize + x) * 3..][..3];
                        assert_eq!([table[i * 4 + 2], table[i * 4 + 1], table[i * 4]], px);
                    }
                }
            }
        }
    }

    #[test]
    fn bad_ppm_is_refused_not_panicking() {
        for bad in [
            &b""[..],
            b"P5\n1 1\n255\n\0",
            b"P6\n99999 1\n255\n",
            b"P6\n2 2\n255\n\0\0",
        ] {
            assert!(parse_ppm(bad).is_err());
        }
    }
}
