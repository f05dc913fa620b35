//! Prints a new random secret key, ready for an environment variable:
//!
//! ```sh
//! cargo run --example keygen
//! export HTTP_CACHE_KEY="$(cargo run -q --example keygen)"
//! ```
//!
//! The key is 32 bytes from the operating system's secure generator, printed as 64 hex digits.
//! `SecretKey::from_env("HTTP_CACHE_KEY")` uses the variable's bytes as the key, so those 64
//! characters *are* the key (256 bits of entropy); nothing needs decoding.

use hyper_client_cache::SecretKey;

fn main() -> Result<(), hyper_client_cache::KeyError> {
    let key = SecretKey::generate()?;
    let hex: String = key
        .expose_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // Prove the printed form is accepted as it will be read back.
    let reread = SecretKey::new(hex.as_str())?;
    eprintln!(
        "key id {:?} (this is public; the line on stdout is the secret)",
        reread
    );
    println!("{hex}");
    Ok(())
}
