fn main() {
    println!("fracture: work in progress");
}
