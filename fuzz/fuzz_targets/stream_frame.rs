//! TCP/TLS stream framing on arbitrary bytes.
//!
//! Properties: nothing panics; a complete frame lies inside the buffer and is not empty;
//! the verdict depends only on the bytes of the frame (bytes that arrive after it change
//! nothing, and the frame alone is still one complete frame); a buffer that needs more data
//! keeps needing it, or becomes a frame or an error, never an earlier frame, when a prefix
//! of it is looked at.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_core::message::stream_frame_len;

fuzz_target!(|data: &[u8]| {
    // The first byte says where the buffer is cut, so the fuzzer explores partial reads.
    let Some((&cut, data)) = data.split_first() else {
        return;
    };
    let verdict = stream_frame_len(data);
    if let Ok(Some(n)) = verdict {
        assert!(
            n > 0 && n <= data.len(),
            "frame of {n} bytes in {}",
            data.len()
        );
        assert_eq!(stream_frame_len(&data[..n]), Ok(Some(n)), "the frame alone");
        let mut more = data[..n].to_vec();
        more.extend_from_slice(b"OPTIONS sip:x SIP/2.0\r\n");
        assert_eq!(
            stream_frame_len(&more),
            Ok(Some(n)),
            "bytes after the frame"
        );
        let _ = sip_core::message::parse(&data[..n]);
    }
    let prefix = &data[..usize::from(cut).min(data.len())];
    if let Ok(Some(p)) = stream_frame_len(prefix) {
        // A frame found in a prefix must be the same frame the whole buffer yields.
        assert_eq!(verdict, Ok(Some(p)), "prefix framed differently");
    }
});
