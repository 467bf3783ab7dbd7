locals {
  alarms = {
    iterator-age = {
      metric    = "IteratorAge"
      statistic = "Maximum"
      period    = 60
      periods   = 5
      threshold = var.iterator_age_alarm_ms
      what      = "falling behind its stream"
    }
    errors = {
      metric    = "Errors"
      statistic = "Sum"
      period    = 300
      periods   = 1
      threshold = 0
      what      = "raising errors (batches are retried or bisected)"
    }
  }
}
