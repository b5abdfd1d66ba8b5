//! The masking layer every output passes through: free text, SQL, argv and JSON. Masking
//! never panics and never lets a found secret through.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rasp_agent::mask;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let m = mask::shared();
    let spans = m.scanner().scan(&text);
    let masked = m.mask_str(&text);
    for s in &spans {
        // A secret of a kind the policy masks must not survive verbatim (short ones may
        // coincide with the mask text itself, and the same bytes elsewhere in the input,
        // where nothing marks them as a secret, legitimately stay). A span whose own masked
        // form still contains it is made of mask text already (`password=****` is a
        // fixpoint, `password=***` masks to `password=****`): it reveals nothing.
        let secret = &text[s.start..s.end];
        if secret.len() >= 12
            && !m.mask_str(secret).contains(secret)
            && m.policy().action(s.kind) != mask::MaskAction::Keep
            && text.matches(secret).count() == 1
        {
            assert!(
                !masked.contains(secret),
                "{:?} secret {secret:?} survived masking: {masked:?}",
                s.kind
            );
        }
    }
    let _ = m.mask_sql(&text);
    let argv: Vec<String> = text.split('\0').map(str::to_string).collect();
    let _ = m.mask_argv(&argv);
    let mut value = serde_json::json!({"argv": argv, "path": text, "nested": [{"q": text}]});
    m.mask_json(&mut value);
});
