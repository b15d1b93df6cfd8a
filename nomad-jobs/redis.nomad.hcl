# Example Redis 7 for Dora's load figures and pfop queue. One instance with
# its data on a host volume; production setups may prefer a managed Redis or
# Sentinel. Reached by the platform at 127.0.0.1:6379 on the node it runs
# on, or at dora-redis.service.consul:6379 through Consul DNS.

variable "region" {
  type    = string
  default = "global"
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

job "dora-redis" {
  region      = var.region
  datacenters = var.datacenters
  type        = "service"

  meta {
    platform = "dora"
    role     = "redis"
  }

  group "redis" {
    count = 1

    network {
      port "redis" {
        static = 6379
        to     = 6379
      }
    }

    service {
      name     = "dora-redis"
      provider = "consul"
      port     = "redis"

      check {
        type     = "tcp"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "redis" {
      driver = "docker"

      config {
        image = "redis:7"
        ports = ["redis"]
        args  = ["redis-server", "--appendonly", "yes", "--maxmemory-policy", "noeviction"]
      }

      resources {
        cpu    = 500
        memory = 512
      }
    }
  }
}
