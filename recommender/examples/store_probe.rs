use std::time::Instant;
fn main() {
    let path = std::path::Path::new("/tmp/probe/p.redb");
    let _ = std::fs::remove_file(path);
    let db = redb::Database::create(path).unwrap();
    const T: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("j");
    let blob = vec![7u8; 3 << 20];
    for two_phase in [true, false] {
        for i in 0..5u64 {
            let t = Instant::now();
            let mut txn = db.begin_write().unwrap();
            txn.set_two_phase_commit(two_phase);
            {
                let mut j = txn.open_table(T).unwrap();
                j.insert(i + if two_phase { 0 } else { 100 }, blob.as_slice())
                    .unwrap();
            }
            let t1 = t.elapsed();
            txn.commit().unwrap();
            println!(
                "2pc={two_phase} insert {:?} commit {:?}",
                t1,
                t.elapsed() - t1
            );
        }
    }
    // many small inserts
    const E: redb::TableDefinition<(u64, u64, u16, u8), &[u8]> = redb::TableDefinition::new("e");
    let v = vec![1u8; 250];
    for round in 0..3u64 {
        let t = Instant::now();
        let txn = db.begin_write().unwrap();
        {
            let mut e = txn.open_table(E).unwrap();
            for k in 0..15000u64 {
                e.insert(((k * 7919 + round) % 100000, k, 443, 6), v.as_slice())
                    .unwrap();
            }
        }
        let t1 = t.elapsed();
        txn.commit().unwrap();
        println!("15k inserts {:?} commit {:?}", t1, t.elapsed() - t1);
    }
    println!("file {} MiB", std::fs::metadata(path).unwrap().len() >> 20);
}
