-- queries.sql — the realprog query set, run by sqlite3 on the database
-- gen_sqlite.py builds.  Every result is deterministic: its output under
-- ftmem must equal the glibc run's byte for byte.
.bail on
.headers on
.mode list
PRAGMA cache_size = -65536;
PRAGMA temp_store = memory;

SELECT 'counts', (SELECT count(*) FROM customers), (SELECT count(*) FROM products),
       (SELECT count(*) FROM orders), (SELECT count(*) FROM tags);

-- joins + group by: best customers by spend
SELECT c.id, c.name, c.city, count(*) AS n, sum(o.qty * p.price_cents) AS spend
FROM orders o JOIN customers c ON c.id = o.customer_id JOIN products p ON p.id = o.product_id
GROUP BY c.id ORDER BY spend DESC, c.id LIMIT 25;

-- group by with having, three-way join
SELECT c.city, p.category, count(*) AS n, sum(o.qty) AS units, avg(o.qty) AS avg_qty
FROM orders o JOIN customers c ON c.id = o.customer_id JOIN products p ON p.id = o.product_id
GROUP BY c.city, p.category HAVING count(*) > 10 ORDER BY c.city, p.category;

-- window functions: rank within city, running totals, lag/lead, ntile
SELECT * FROM (
  SELECT c.city, c.id, sum(o.qty * p.price_cents) AS spend,
         rank() OVER (PARTITION BY c.city ORDER BY sum(o.qty * p.price_cents) DESC, c.id) AS rk,
         ntile(4) OVER (PARTITION BY c.city ORDER BY sum(o.qty * p.price_cents)) AS quartile
  FROM orders o JOIN customers c ON c.id = o.customer_id JOIN products p ON p.id = o.product_id
  GROUP BY c.id)
WHERE rk <= 3 ORDER BY city, rk;

SELECT day, units, sum(units) OVER (ORDER BY day ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS running,
       avg(units) OVER (ORDER BY day ROWS BETWEEN 6 PRECEDING AND CURRENT ROW) AS week_avg,
       lag(units, 1, 0) OVER (ORDER BY day) AS prev, lead(units, 1, 0) OVER (ORDER BY day) AS next
FROM (SELECT day, sum(qty) AS units FROM orders GROUP BY day) ORDER BY day;

SELECT product_id, day, qty, row_number() OVER w AS rn, first_value(day) OVER w AS first_day,
       dense_rank() OVER (PARTITION BY product_id ORDER BY qty DESC) AS dr
FROM orders WHERE product_id % 97 = 3 WINDOW w AS (PARTITION BY product_id ORDER BY day, id)
ORDER BY product_id, day, id;

-- recursive CTE
WITH RECURSIVE seq(n, v) AS (SELECT 1, 1 UNION ALL SELECT n + 1, (v * 48271) % 2147483647 FROM seq WHERE n < 20000)
SELECT count(*), sum(v % 1000), max(v), min(v) FROM seq;

-- big strings: group_concat grows by realloc, then substr/length/instr
SELECT category, count(*), length(group_concat(title, '|')), substr(group_concat(title, '|'), 1, 60)
FROM (SELECT * FROM products ORDER BY id) GROUP BY category ORDER BY category;
SELECT length(group_concat(note, ' ')), sum(length(note)), max(length(note)) FROM orders;
SELECT c.city, length(json_group_array(json_object('id', o.id, 'q', o.qty, 'n', substr(o.note, 1, 20)))) AS jlen
FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY c.city ORDER BY c.city;

-- string functions over every row, sorted by a computed key (sorter memory)
SELECT id, upper(substr(note, 1, 12)), replace(substr(note, 1, 30), 'ka', 'KA'), length(note)
FROM orders ORDER BY lower(substr(note, 1, 16)), id LIMIT 40 OFFSET 1000;
SELECT count(DISTINCT note), count(DISTINCT substr(note, 1, 8)) FROM orders;

-- subqueries, EXISTS, IN, LIKE
SELECT count(*) FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id AND o.qty = 9);
SELECT count(*), sum(qty) FROM orders WHERE product_id IN (SELECT id FROM products WHERE category IN ('tea', 'bikes'));
SELECT count(*) FROM orders WHERE note LIKE '%quix%';
SELECT t.tag, count(*), round(sum(t.weight), 2) FROM tags t JOIN orders o ON o.id = t.order_id
GROUP BY t.tag ORDER BY count(*) DESC, t.tag LIMIT 30;

-- writes: update, delete, insert-select, temp table, then vacuum
BEGIN;
UPDATE orders SET note = note || ' (rev ' || id || ')', qty = qty + 1 WHERE id % 7 = 0;
DELETE FROM orders WHERE id % 11 = 0;
DELETE FROM tags WHERE order_id NOT IN (SELECT id FROM orders);
INSERT INTO orders(customer_id, product_id, qty, day, note)
  SELECT customer_id, product_id, qty * 2, day + 1500, 'copy of ' || id FROM orders WHERE id % 13 = 1;
CREATE TEMP TABLE spend AS
  SELECT customer_id, sum(qty) AS units, group_concat(id) AS ids FROM orders GROUP BY customer_id;
COMMIT;
SELECT count(*), sum(units), sum(length(ids)) FROM spend;
SELECT count(*), sum(qty), sum(length(note)), max(id) FROM orders;
VACUUM;
PRAGMA integrity_check;
SELECT count(*), sum(qty), sum(length(note)), max(id) FROM orders;
SELECT name, count(*) FROM sqlite_schema GROUP BY type, name ORDER BY type, name;
SELECT tbl, idx, stat FROM sqlite_stat1 ORDER BY tbl, idx;
