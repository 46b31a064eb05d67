//! `refinery::embed_migrations!` reads `migrations/` at compile time, but cargo does not know
//! that: without this, a new migration is not embedded until something else changes.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
