fn main() {
    println!("pointsman");
}
