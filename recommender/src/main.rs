/// See `recommender::allocator` for the choice and its settings.
#[global_allocator]
static GLOBAL: recommender::allocator::Allocator = recommender::allocator::Allocator {};

fn main() {
    recommender::allocator::configure();
    std::process::exit(recommender::cli::main());
}
