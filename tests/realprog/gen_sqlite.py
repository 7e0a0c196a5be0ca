# gen_sqlite.py ROWS — print an SQL script that builds the realprog
# database: customers, products, orders, tags (about ROWS rows in all, in
# those proportions), with indexes, loaded in a few transactions.  Fully
# deterministic (its own xorshift generator, no dependence on the Python
# version); text lengths vary from empty to several KiB so sqlite's
# allocations span many sizes and some rows spill to overflow pages.
import sys

rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
n_cust = max(10, rows // 10)
n_prod = max(10, rows // 50)
n_tags = max(10, rows // 10)
n_ord = max(10, rows - n_cust - n_prod - n_tags)

state = 0x9E3779B97F4A7C15


def rnd(n):
    """Uniform-ish integer in [0, n)."""
    global state
    x = state
    x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 7
    x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
    state = x
    return (x >> 11) % n


SYL = ["ka", "lo", "mi", "ne", "su", "ra", "to", "vi", "do", "che", "an", "qu", "ix", "or", "el", "ya"]
CITIES = ["Lyon", "Porto", "Turku", "Graz", "Brno", "Gent", "Cork", "Bergen", "Split", "Kaunas",
          "Tartu", "Pisa", "Lund", "Aarhus", "Basel", "Leeds", "Malaga", "Riga", "Bonn", "Delft"]
CATS = ["tools", "books", "garden", "audio", "toys", "food", "paint", "bikes", "games", "lamps", "shoes", "tea"]


def word(lo=2, hi=5):
    return "".join(SYL[rnd(len(SYL))] for _ in range(lo + rnd(hi - lo + 1)))


WORDS = [word() for _ in range(4096)]


def text():
    k = rnd(100)
    if k < 5:
        n = 0
    elif k < 90:
        n = 1 + rnd(12)
    elif k < 99:
        n = 12 + rnd(80)
    else:
        n = 300 + rnd(700)  # a few KiB: overflow pages
    return " ".join(WORDS[rnd(4096)] for _ in range(n))


def q(s):
    return "'" + s.replace("'", "''") + "'"


out = []
w = out.append
w("PRAGMA page_size=4096;")
w("CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT, signup INTEGER, tier INTEGER);")
w("CREATE TABLE products(id INTEGER PRIMARY KEY, title TEXT NOT NULL, category TEXT, price_cents INTEGER, stock INTEGER);")
w("CREATE TABLE orders(id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id), "
  "product_id INTEGER REFERENCES products(id), qty INTEGER, day INTEGER, note TEXT);")
w("CREATE TABLE tags(id INTEGER PRIMARY KEY, order_id INTEGER, tag TEXT, weight REAL);")

w("BEGIN;")
for i in range(1, n_cust + 1):
    w("INSERT INTO customers VALUES(%d,%s,%s,%d,%d);" % (
        i, q(word(2, 4).capitalize() + " " + word(3, 6).capitalize()), q(CITIES[rnd(len(CITIES))]),
        20000 + rnd(3000), rnd(5)))
for i in range(1, n_prod + 1):
    w("INSERT INTO products VALUES(%d,%s,%s,%d,%d);" % (
        i, q(word(2, 6) + " " + word(1, 3)), q(CATS[rnd(len(CATS))]), 99 + rnd(50000), rnd(1000)))
w("COMMIT;")

# orders in batches: some single-row INSERTs (parser-heavy), some multi-row
w("BEGIN;")
i = 1
while i <= n_ord:
    if rnd(4) == 0:
        vals = []
        for _ in range(min(50, n_ord - i + 1)):
            vals.append("(%d,%d,%d,%d,%d,%s)" % (i, 1 + rnd(n_cust), 1 + rnd(n_prod), 1 + rnd(9),
                                                  rnd(1500), q(text())))
            i += 1
        w("INSERT INTO orders VALUES" + ",".join(vals) + ";")
    else:
        w("INSERT INTO orders VALUES(%d,%d,%d,%d,%d,%s);" % (i, 1 + rnd(n_cust), 1 + rnd(n_prod), 1 + rnd(9),
                                                            rnd(1500), q(text())))
        i += 1
    if i % 20000 < 60 and rnd(3) == 0:
        w("COMMIT; BEGIN;")
w("COMMIT;")

w("BEGIN;")
for i in range(1, n_tags + 1):
    w("INSERT INTO tags VALUES(%d,%d,%s,%d.%02d);" % (i, 1 + rnd(n_ord), q(word(1, 3)), rnd(100), rnd(100)))
w("COMMIT;")

w("CREATE INDEX orders_customer ON orders(customer_id);")
w("CREATE INDEX orders_product_day ON orders(product_id, day);")
w("CREATE INDEX customers_city ON customers(city, tier);")
w("CREATE INDEX products_category ON products(category);")
w("CREATE INDEX tags_order ON tags(order_id, tag);")
w("ANALYZE;")
sys.stdout.write("\n".join(out) + "\n")
