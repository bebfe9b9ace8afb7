"""How deliveries leave a gateway: the dispatcher, the sender, the SSRF guard, and the
policies (retry, circuit breaker, rate limit). Independent of intake."""
