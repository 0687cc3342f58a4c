//! The table-line parser: never panics, and what it accepts prints back to a line that
//! parses to the same thing.
#![no_main]
use dm_remap_logic::args::TableLine;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let words = data.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty());
    if let Ok(line) = TableLine::parse(words) {
        let printed = format!("main spare{}", line.features());
        let again = TableLine::parse(printed.split_whitespace().map(str::as_bytes)).expect("printed line must parse");
        assert_eq!(again, line);
    }
});
