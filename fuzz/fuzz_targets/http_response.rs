//! Any bytes as an HTTP response: the client's head parser, header
//! parsers (Content-Length, Content-Range) and body framing (lengths,
//! chunked, until close) must return or fail, never panic, loop or
//! allocate from a number the server sent (libFuzzer's -malloc_limit_mb
//! catches the latter).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imagesource::fuzz_response(data);
});
