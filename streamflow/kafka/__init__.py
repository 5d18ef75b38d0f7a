"""Everything that talks to Kafka besides the faust shells: client configuration and security
(``config``), topic admin (``admin``), the batch producer (``producer``) and its delivery retries
(``delivery``), and the chunk transport under faust with its patches (``transport``)."""
