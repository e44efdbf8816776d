//! The one font used for text in plots and overlays: DejaVu Sans, embedded in the binary
//! (`assets/fonts/DejaVuSans.ttf`, Bitstream Vera licence with DejaVu's public-domain changes,
//! see `assets/fonts/DejaVuSans-LICENSE.txt`), so that pictures carry their axis labels, tick
//! numbers, legends and titles on a machine with no fonts installed.
//!
//! Text is drawn by `plotters` with its `ab_glyph` feature (a pure-Rust rasteriser; no system
//! font lookup, no C library). [`register`] makes the font plotters' `sans-serif` family; every
//! drawing function of this crate calls it first.
//!
//! ```
//! fracture_nn::fonts::register();
//! assert!(fracture_nn::fonts::DEJAVU_SANS.len() > 100_000);
//! ```

use std::sync::Once;

/// The TrueType bytes of DejaVu Sans.
pub const DEJAVU_SANS: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// The family name plotters text styles use for this font.
pub const FAMILY: &str = "sans-serif";

/// Registers DejaVu Sans as plotters' `sans-serif` family (normal and bold). Idempotent and
/// cheap after the first call.
pub fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for style in [
            plotters::style::FontStyle::Normal,
            plotters::style::FontStyle::Bold,
        ] {
            // The bytes are compiled in and checked by this module's doc test.
            plotters::style::register_font(FAMILY, style, DEJAVU_SANS)
                .unwrap_or_else(|_| panic!("the embedded DejaVu Sans is a valid font"));
        }
    });
}
