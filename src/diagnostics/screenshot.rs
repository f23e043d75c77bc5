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
    for y in (0..img.height as usize).rev() {
        let line = &img.pixels[y * w * 3..(y + 1) * w * 3];
        for px in line.chunks_exact(3) {
            out.extend_from_slice(&[px[2], px[1], px[0]]);
        }
        out.resize(out.len() + (row - w * 3), 0);
    }
    out
}

pub fn to_png(img: &Rgb) -> Result<Vec<u8>, ShotError> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, img.width, img.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        let mut w = enc.write_header()?;
        w.write_image_data(&img.pixels)?;
    }
    Ok(out)
}

/// Turns QEMU's PPM into a BMP and a PNG (atomic writes); returns the picture.
pub fn store(ppm: &Path, bmp: &Path, png_path: &Path) -> Result<Rgb, ShotError> {
    let img = parse_ppm(&std::fs::read(ppm)?)?;
    // Replaced whole (a reader never sees half a picture), not synced: the next capture
    // overwrites them, and syncing four times per capture made captures wait on the disk.
    crate::storage::fsutil::replace_file(bmp, &to_bmp(&img), 0o644)?;
    crate::storage::fsutil::replace_file(png_path, &to_png(&img)?, 0o644)?;
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
