fn main() {
    std::process::exit(recommender::cli::main());
}
