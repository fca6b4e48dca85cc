fn main() {
    eprintln!("agent: not wired yet");
    std::process::exit(2);
}
