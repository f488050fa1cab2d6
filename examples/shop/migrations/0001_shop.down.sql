DROP TABLE IF EXISTS checkout_keys, order_lines, orders, users, products, images, categories;
