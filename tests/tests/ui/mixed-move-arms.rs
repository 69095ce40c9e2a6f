// The user wrote `move` on one arm but not the other; the arms share one closure.
use batch_runtime::batch;

fn main() {
    let mut failures = 0;
    let label = String::from("checkout");
    let _batch = batch! {
        user: get("/users/7"),
        catch |_, _, _| failures += 1,
        finally move |_, _| println!("{label} done"),
    };
    let _ = failures;
}
