fn main() {
    println!("ferrochat");
}
