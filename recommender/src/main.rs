/// The service allocates on many threads and frees on others (batches decoded on the blocking
/// pool, merged and dropped by the writer); mimalloc handles that far better than glibc's malloc
/// (see BENCHMARKS.md, "Durable ingest").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(recommender::cli::main());
}
