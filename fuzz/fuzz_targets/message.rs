//! The message parser: never panics.
#![no_main]
use dm_remap_logic::message::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let words = data.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty());
    let _ = Message::parse(words);
});
