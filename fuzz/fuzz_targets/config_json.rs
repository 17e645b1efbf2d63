//! Arbitrary bytes as a config.json: parsing and the runtime's pre-clone checks must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kiln_runtime::check_config(data);
});
