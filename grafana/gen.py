#!/usr/bin/env python3
"""Generates grafana/dashboards/*.json (run after editing; the JSON is committed, and
`cargo xtask promtool` fails when it is not what this script writes with its defaults).
Every panel query must use metrics the exporter or the relay emits: `cargo xtask promtool` checks
the names, `cargo xtask e2e` runs every query against a live Prometheus.

Parameters (the defaults match prometheus/prometheus.yml's jobs):
  --pi-selector     label matchers that select pi-exporter's `up` series  (job="pi-exporter")
  --relay-selector  label matchers that select alert-relay's series       (job="alert-relay")
  --out DIR         where to write the dashboards                         (grafana/dashboards)
"""
import argparse, json, os, sys

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--pi-selector", default='job="pi-exporter"')
ap.add_argument("--relay-selector", default='job="alert-relay"')
ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboards"))
ARGS = ap.parse_args()
for flag, sel in [("--pi-selector", ARGS.pi_selector), ("--relay-selector", ARGS.relay_selector)]:
    # Matchers go inside `{...}` beside others: braces or a trailing comma would break every query.
    if not sel.strip() or "{" in sel or "}" in sel or sel.strip().endswith(","):
        sys.exit(f"{flag} must be label matchers such as job=\"pi\", got {sel!r}")
PI = ARGS.pi_selector
RELAY = ARGS.relay_selector

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'site=~"$site", instance=~"$instance"'
# grafana.com import: the datasource input the importer asks for, and what the dashboards need.
# The `datasource` variable starts on the chosen one; provisioned (no import), the placeholder
# matches no datasource and Grafana selects the default one.
INPUTS = [{"name": "DS_PROMETHEUS", "label": "Prometheus", "description": "The Prometheus that scrapes the Pis and the relay",
           "type": "datasource", "pluginId": "prometheus", "pluginName": "Prometheus"}]
REQUIRES = [
    {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
    {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
    {"type": "panel", "id": "stat", "name": "Stat", "version": ""},
    {"type": "panel", "id": "table", "name": "Table", "version": ""},
    {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
]
DATASOURCE_VAR = {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus",
                  "current": {"text": "Prometheus", "value": "${DS_PROMETHEUS}"}, "hide": 0}

def target(expr, legend="", ref="A", instant=False, fmt="time_series"):
    t = {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "format": fmt}
    if instant:
        t["instant"] = True
        t["range"] = False
    return t

def variables(multi_instance=True):
    return {"list": [
        DATASOURCE_VAR,
        {"name": "site", "type": "query", "datasource": DS, "label": "Site",
         "query": {"query": "label_values(rpi_exporter_build_info, site)", "refId": "site"},
         "definition": "label_values(rpi_exporter_build_info, site)",
         "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2, "sort": 1,
         "current": {"text": "All", "value": "$__all"}},
        {"name": "instance", "type": "query", "datasource": DS, "label": "Pi",
         "query": {"query": 'label_values(rpi_exporter_build_info{site=~"$site"}, instance)', "refId": "instance"},
         "definition": 'label_values(rpi_exporter_build_info{site=~"$site"}, instance)',
         "includeAll": multi_instance, "multi": multi_instance, "allValue": ".*", "refresh": 2, "sort": 1,
         "current": {"text": "All", "value": "$__all"} if multi_instance else {}},
    ]}

def dashboard(uid, title, panels, multi_instance=True, links=None, templating=None):
    for i, p in enumerate(panels, 1):
        p["id"] = i
    used = {p["type"] for p in panels}
    return {
        "__inputs": INPUTS,
        "__requires": [r for r in REQUIRES if r["type"] != "panel" or r["id"] in used],
        "uid": uid, "title": title, "tags": ["pifleet", "raspberry-pi"], "timezone": "browser",
        "schemaVersion": 39, "version": 1, "editable": True, "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"},
        "templating": templating or variables(multi_instance),
        "annotations": {"list": []}, "links": links or [], "panels": panels,
    }

def ts(title, targets, unit, x, y, w=12, h=8, **extra):
    p = {"type": "timeseries", "title": title, "datasource": DS, "targets": targets,
         "gridPos": {"x": x, "y": y, "w": w, "h": h},
         "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
         "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}}
    p.update(extra)
    return p

def stat(title, expr, unit, x, y, w=4, h=4, thresholds=None, mappings=None):
    return {"type": "stat", "title": title, "datasource": DS,
            "targets": [target(expr, instant=True)],
            "gridPos": {"x": x, "y": y, "w": w, "h": h},
            "fieldConfig": {"defaults": {"unit": unit, "mappings": mappings or [],
                                         "thresholds": {"mode": "absolute", "steps": thresholds or [{"color": "green", "value": None}]}},
                            "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background", "graphMode": "none"}}

RED_IF_1 = [{"color": "green", "value": None}, {"color": "red", "value": 1}]
OK_BAD = [{"type": "value", "options": {"0": {"text": "OK", "color": "green"}, "1": {"text": "YES", "color": "red"}}}]

# ---------------------------------------------------------------- fleet overview
columns = [
    ("A", f'rpi_soc_temperature_celsius{{{SEL}}}', "SoC °C"),
    ("B", f'max by (instance, site) (rpi_throttled{{{SEL}}})', "Throttled now"),
    ("C", f'rpi_throttled_since_boot{{condition="under_voltage", {SEL}}}', "Under-voltage since boot"),
    ("D", f'rpi_filesystem_avail_bytes{{mountpoint="/", {SEL}}} / rpi_filesystem_size_bytes{{mountpoint="/", {SEL}}}', "Root free"),
    ("E", f'max by (instance, site) (rpi_filesystem_readonly{{fstype!~"tmpfs|vfat|squashfs", {SEL}}})', "Read-only"),
    ("F", f'min by (instance, site) (rpi_rtc_time_valid{{{SEL}}})', "RTC valid"),
    ("G", f'max by (instance, site) (abs(rpi_rtc_offset_seconds{{{SEL}}}))', "RTC offset s"),
    ("H", f'rpi_time_synchronized{{{SEL}}}', "Clock synced"),
    ("I", f'rpi_ups_on_battery{{{SEL}}}', "On battery"),
    ("J", f'rpi_ups_battery_charge_ratio{{{SEL}}}', "UPS charge"),
    ("L", f'sum by (instance, site) (rpi_doctor_check{{status=~"warn|fail", {SEL}}})', "Checklist not passing"),
    ("K", f'time() - timestamp(rpi_exporter_build_info{{{SEL}}})', "Last scrape age s"),
]
table = {
    "type": "table", "title": "Fleet: one row per Pi", "datasource": DS,
    "gridPos": {"x": 0, "y": 4, "w": 24, "h": 14},
    "targets": [target(e, ref=r, instant=True, fmt="table") for r, e, _ in columns],
    "transformations": [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {
            "excludeByName": {"Time": True, "job": True, "condition": True, "mountpoint": True,
                              "device": True, "fstype": True, "role": False, "__name__": True},
            "renameByName": {f"Value #{r}": name for r, _, name in columns}}},
    ],
    "fieldConfig": {"defaults": {"custom": {"align": "auto"}}, "overrides": [
        {"matcher": {"id": "byName", "options": "SoC °C"}, "properties": [
            {"id": "unit", "value": "celsius"}, {"id": "custom.cellOptions", "value": {"type": "color-background"}},
            {"id": "thresholds", "value": {"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "orange", "value": 70}, {"color": "red", "value": 80}]}}]},
        {"matcher": {"id": "byName", "options": "Root free"}, "properties": [
            {"id": "unit", "value": "percentunit"}, {"id": "custom.cellOptions", "value": {"type": "color-background"}},
            {"id": "thresholds", "value": {"mode": "absolute", "steps": [{"color": "red", "value": None}, {"color": "orange", "value": 0.05}, {"color": "green", "value": 0.15}]}}]},
        {"matcher": {"id": "byName", "options": "UPS charge"}, "properties": [{"id": "unit", "value": "percentunit"}]},
        {"matcher": {"id": "byName", "options": "Last scrape age s"}, "properties": [{"id": "unit", "value": "s"}]},
        # Checks of `pi-exporter doctor` on WARN or FAIL (docs/doctor.md); PASS and SKIP are not counted.
        {"matcher": {"id": "byName", "options": "Checklist not passing"}, "properties": [
            {"id": "custom.cellOptions", "value": {"type": "color-background"}},
            {"id": "thresholds", "value": {"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "orange", "value": 1}]}}]},
        {"matcher": {"id": "byName", "options": "instance"}, "properties": [
            {"id": "links", "value": [{"title": "Device detail", "url": "/d/pifleet-device?var-instance=${__value.raw}&${__url_time_range}"}]}]},
    ] + [
        {"matcher": {"id": "byName", "options": n}, "properties": [
            {"id": "mappings", "value": OK_BAD}, {"id": "custom.cellOptions", "value": {"type": "color-background"}}]}
        for n in ["Throttled now", "Under-voltage since boot", "Read-only", "On battery"]
    ] + [
        {"matcher": {"id": "byName", "options": n}, "properties": [
            {"id": "mappings", "value": [{"type": "value", "options": {"1": {"text": "OK", "color": "green"}, "0": {"text": "NO", "color": "red"}}}]},
            {"id": "custom.cellOptions", "value": {"type": "color-background"}}]}
        for n in ["RTC valid", "Clock synced"]
    ]},
    "options": {"showHeader": True, "sortBy": [{"displayName": "SoC °C", "desc": True}]},
}
fleet = dashboard("pifleet-fleet", "pifleet: fleet overview", [
    stat("Pis up", f'sum(up{{{PI}, {SEL}}})', "none", 0, 0),
    stat("Pis down", f'count(up{{{PI}, {SEL}}} == 0) or vector(0)', "none", 4, 0, thresholds=RED_IF_1),
    stat("Under-volted now", f'count(rpi_throttled{{condition="under_voltage", {SEL}}} == 1) or vector(0)', "none", 8, 0, thresholds=RED_IF_1),
    stat("Read-only filesystems", f'count(rpi_filesystem_readonly{{fstype!~"tmpfs|vfat|squashfs", {SEL}}} == 1) or vector(0)', "none", 12, 0, thresholds=RED_IF_1),
    stat("On battery", f'count(rpi_ups_on_battery{{{SEL}}} == 1) or vector(0)', "none", 16, 0, thresholds=RED_IF_1),
    stat("Hottest SoC", f'max(rpi_soc_temperature_celsius{{{SEL}}})', "celsius", 20, 0,
         thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 70}, {"color": "red", "value": 80}]),
    table,
    ts("SoC temperature", [target(f'rpi_soc_temperature_celsius{{{SEL}}}', "{{instance}}")], "celsius", 0, 18),
    ts("Root filesystem available", [target(f'rpi_filesystem_avail_bytes{{mountpoint="/", {SEL}}} / rpi_filesystem_size_bytes{{mountpoint="/", {SEL}}}', "{{instance}}")], "percentunit", 12, 18),
    ts("Scrape success", [target(f'up{{{PI}, {SEL}}}', "{{instance}}")], "none", 0, 26),
    ts("Failing collectors", [target(f'rpi_exporter_collector_success{{{SEL}}} == 0', "{{instance}} {{collector}}")], "none", 12, 26),
])

# ---------------------------------------------------------------- device detail
D = 'instance=~"$instance"'
device = dashboard("pifleet-device", "pifleet: device detail", [
    stat("SoC temperature", f'rpi_soc_temperature_celsius{{{D}}}', "celsius", 0, 0,
         thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 70}, {"color": "red", "value": 80}]),
    stat("Uptime", f'rpi_uptime_seconds{{{D}}}', "s", 4, 0),
    stat("Under-volted since boot", f'rpi_throttled_since_boot{{condition="under_voltage", {D}}}', "none", 8, 0, thresholds=RED_IF_1, mappings=OK_BAD),
    stat("Root read-only", f'rpi_filesystem_readonly{{mountpoint="/", {D}}}', "none", 12, 0, thresholds=RED_IF_1, mappings=OK_BAD),
    stat("Clock synchronised", f'rpi_time_synchronized{{{D}}}', "none", 16, 0,
         thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}]),
    stat("UPS charge", f'rpi_ups_battery_charge_ratio{{{D}}}', "percentunit", 20, 0,
         thresholds=[{"color": "red", "value": None}, {"color": "orange", "value": 0.2}, {"color": "green", "value": 0.5}]),
    ts("Temperature", [target(f'rpi_soc_temperature_celsius{{{D}}}', "SoC"),
                       target(f'rpi_soc_temperature_limit_celsius{{{D}}}', "limit", "B"),
                       target(f'rpi_rtc_temperature_celsius{{{D}}}', "RTC {{device}}", "C")], "celsius", 0, 4),
    ts("Throttling", [target(f'rpi_throttled{{{D}}}', "{{condition}}")], "none", 12, 4),
    ts("ARM clock: measured vs set", [target(f'rpi_clock_measured_hertz{{clock="arm", {D}}}', "measured"),
                                     target(f'rpi_clock_hertz{{clock="arm", {D}}}', "set", "B")], "hertz", 0, 12),
    ts("Voltages", [target(f'rpi_voltage_volts{{{D}}}', "{{rail}}"),
                    target(f'rpi_input_voltage_volts{{{D}}}', "5 V input (Pi 5)", "B")], "volt", 12, 12),
    ts("PMIC power (Pi 5, SoC side)", [target(f'rpi_power_watts{{{D}}}', "SoC-side power"),
                                       target(f'rpi_pmic_rail_amperes{{rail="vdd_core", {D}}}', "vdd_core A", "B")], "watt", 0, 20),
    ts("Disk writes per day", [target(f'rate(rpi_disk_written_bytes_total{{{D}}}[1h]) * 86400', "{{device}}")], "bytes", 12, 20),
    ts("Filesystem available", [target(f'rpi_filesystem_avail_bytes{{{D}}} / rpi_filesystem_size_bytes{{{D}}}', "{{mountpoint}}")], "percentunit", 0, 28),
    ts("Memory and swap", [target(f'rpi_memory_available_bytes{{{D}}}', "memory available"),
                           target(f'rpi_swap_used_bytes{{{D}}}', "swap used", "B")], "bytes", 12, 28),
    ts("UPS charge and runtime", [target(f'rpi_ups_battery_charge_ratio{{{D}}}', "charge"),
                                  target(f'rpi_ups_runtime_seconds{{{D}}}', "runtime", "B")], "percentunit", 0, 36,
       fieldConfig={"defaults": {"unit": "percentunit"}, "overrides": [
           {"matcher": {"id": "byName", "options": "runtime"}, "properties": [{"id": "unit", "value": "s"}, {"id": "custom.axisPlacement", "value": "right"}]}]}),
    ts("UPS battery", [target(f'rpi_ups_battery_voltage_volts{{{D}}}', "voltage"),
                       target(f'rpi_ups_on_battery{{{D}}}', "on battery", "B")], "volt", 12, 36),
    ts("RTC offset from system clock", [target(f'rpi_rtc_offset_seconds{{{D}}}', "{{device}}"),
                                        target(f'rpi_time_max_error_seconds{{{D}}}', "system max error", "B")], "s", 0, 44),
    ts("Load", [target(f'rpi_load1{{{D}}}', "load1"), target(f'rpi_load5{{{D}}}', "load5", "B")], "none", 12, 44),
    ts("Field checklist: checks not passing (pi-exporter doctor)",
       [target(f'rpi_doctor_check{{status=~"warn|fail", {D}}} == 1', "{{status}}: {{category}} {{check}}")], "none", 0, 52, w=24),
    # Power and flash history (issue 18): why the Pi restarted, how often it loses power, and
    # when its flash reaches its rated endurance at the last 7 days' write rate.
    ts("Reset cause and unclean shutdowns",
       [target(f'rpi_boot_reset_info{{{D}}}', "boot: {{cause}} ({{source}})"),
        target(f'increase(rpi_unclean_shutdowns_total{{{D}}}[1d])', "unclean shutdowns per day", "B"),
        target(f'rpi_last_shutdown_clean{{{D}}}', "last shutdown clean", "C")], "none", 0, 60),
    ts("Power events", [target(f'increase(rpi_under_voltage_events_total{{{D}}}[1h])', "under-voltage events per hour"),
                        target(f'increase(rpi_usb_over_current_total{{{D}}}[1h])', "USB over-current {{port}} per hour", "B")],
       "none", 12, 60),
    ts("Projected flash life (days left at the last 7 days' write rate)",
       [target(f'instance:rpi_flash_endurance_days_left:rate7d{{{D}}}', "{{device}}"),
        target(f'instance:rpi_flash_written_bytes:sum{{{D}}} / on(instance, device) rpi_flash_rated_endurance_bytes{{{D}}} * 100',
               "{{device}} % of rated endurance written", "B")], "d", 0, 68, w=24,
       fieldConfig={"defaults": {"unit": "d"}, "overrides": [
           {"matcher": {"id": "byRegexp", "options": ".*% of rated.*"},
            "properties": [{"id": "unit", "value": "percent"}, {"id": "custom.axisPlacement", "value": "right"}]}]}),
], multi_instance=False, links=[{"title": "Fleet overview", "type": "link", "url": "/d/pifleet-fleet"}])

# ---------------------------------------------------------------- alert-relay
# Metric names: docs/alert-relay.md ("Metrics"). `channel` is the configured channel's name,
# `integration` its type, `destination` the channel or `<channel>/<n>` for the n-th SMS number.
R = f'{RELAY}, instance=~"$relay"'
RATE = "$__rate_interval"
# The incident counts are the leader's: a former leader (PostgreSQL HA) keeps its last ones.
LEADS = f'alert_relay_leader{{{R}}} == 1'
relay_variables = {"list": [
    DATASOURCE_VAR,
    {"name": "relay", "type": "query", "datasource": DS, "label": "Relay",
     "query": {"query": f"label_values(alert_relay_build_info{{{RELAY}}}, instance)", "refId": "relay"},
     "definition": f"label_values(alert_relay_build_info{{{RELAY}}}, instance)",
     "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2, "sort": 1,
     "current": {"text": "All", "value": "$__all"}},
]}
LEADER = [{"type": "value", "options": {"1": {"text": "LEADER", "color": "green"}, "0": {"text": "follower", "color": "blue"}}}]
TRIPPED = [{"type": "value", "options": {"0": {"text": "OK", "color": "green"}, "1": {"text": "TRIPPED", "color": "red"}}}]
relay = dashboard("pifleet-relay", "pifleet: alert-relay", [
    stat("Relays up", f'sum(up{{{R}}})', "none", 0, 0),
    stat("Leaders", f'sum(alert_relay_leader{{{R}}})', "none", 4, 0,
         thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}, {"color": "red", "value": 2}]),
    stat("Dead-man's switch", f'max(alert_relay_deadman_tripped{{{R}}})', "none", 8, 0, thresholds=RED_IF_1, mappings=TRIPPED),
    stat("Last heartbeat", f'time() - max(alert_relay_deadman_last_heartbeat_timestamp_seconds{{{R}}} > 0)', "s", 12, 0,
         thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 300}]),
    stat("Open incidents", f'sum(alert_relay_incidents{{state="open", {R}}} and on(instance) {LEADS}) or vector(0)', "none", 16, 0,
         thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}]),
    stat("Acknowledged incidents", f'sum(alert_relay_incidents{{state="acked", {R}}} and on(instance) {LEADS}) or vector(0)', "none", 20, 0),
    ts("Webhooks by answer", [
        target(f'sum by (status) (rate(alert_relay_webhooks_total{{{R}}}[{RATE}]))', "{{status}}"),
        target(f'sum by (reason) (rate(alert_relay_webhooks_rejected_total{{{R}}}[{RATE}]))', "rejected: {{reason}}", "B"),
    ], "reqps", 0, 4),
    ts("Alerts received", [
        target(f'sum by (status) (rate(alert_relay_alerts_received_total{{{R}}}[{RATE}]))', "{{status}}"),
        target(f'sum(rate(alert_relay_alerts_deduplicated_total{{{R}}}[{RATE}]))', "deduplicated", "B"),
        target(f'sum(rate(alert_relay_alerts_unrouted_total{{{R}}}[{RATE}]))', "unrouted", "C"),
    ], "ops", 12, 4),
    ts("Queue depth per destination", [
        target(f'sum by (channel, integration, destination) (alert_relay_queue_depth{{{R}}})', "{{destination}} ({{integration}})"),
    ], "none", 0, 12),
    ts("Oldest waiting delivery per destination", [
        target(f'max by (channel, integration, destination) (alert_relay_queue_oldest_age_seconds{{{R}}})', "{{destination}} ({{integration}})"),
    ], "s", 12, 12),
    ts("Deliveries per destination", [
        target(f'sum by (channel, integration, destination) (rate(alert_relay_notifications_delivered_total{{{R}}}[{RATE}]))', "delivered: {{destination}} ({{integration}})"),
        target(f'sum by (channel, integration, destination) (rate(alert_relay_notifications_plain_fallback_total{{{R}}}[{RATE}]))', "plain-text fallback: {{destination}}", "B"),
    ], "ops", 0, 20),
    ts("Failed attempts and dead letters", [
        target(f'sum by (destination, reason) (rate(alert_relay_notifications_failed_total{{{R}}}[{RATE}]))', "failed: {{destination}} {{reason}}"),
        target(f'sum by (destination, reason) (increase(alert_relay_notifications_dead_lettered_total{{{R}}}[1h]))', "dead-lettered in 1h: {{destination}} {{reason}}", "B"),
    ], "none", 12, 20),
    ts("Incidents by policy and state", [
        target(f'sum by (policy, state) (alert_relay_incidents{{{R}}} and on(instance) {LEADS})', "{{policy}} {{state}}"),
    ], "none", 0, 28),
    ts("Escalation steps sent (after the first)", [
        target(f'sum by (policy) (increase(alert_relay_escalation_steps_total{{{R}}}[1h]))', "{{policy}} per hour"),
    ], "none", 12, 28),
    ts("Storms", [
        target(f'sum by (policy) (increase(alert_relay_storms_total{{{R}}}[1h]))', "storms per hour: {{policy}}"),
        target(f'sum by (policy) (increase(alert_relay_storm_collapsed_total{{{R}}}[1h]))', "messages collapsed per hour: {{policy}}", "B"),
    ], "none", 0, 36),
    ts("Budgets", [
        target(f'sum by (destination) (increase(alert_relay_budget_held_back_total{{{R}}}[1h]))', "held back per hour: {{destination}}"),
        target(f'sum by (destination) (increase(alert_relay_budget_exhausted_total{{{R}}}[1d]))', "budget windows exhausted per day: {{destination}}", "B"),
    ], "none", 12, 36),
    ts("Dead-man's switch", [
        target(f'alert_relay_deadman_tripped{{{R}}}', "tripped {{instance}}"),
        target(f'time() - (alert_relay_deadman_last_heartbeat_timestamp_seconds{{{R}}} > 0)', "seconds since the last heartbeat {{instance}}", "B"),
    ], "none", 0, 44,
       fieldConfig={"defaults": {"unit": "none"}, "overrides": [
           {"matcher": {"id": "byRegexp", "options": "seconds since.*"},
            "properties": [{"id": "unit", "value": "s"}, {"id": "custom.axisPlacement", "value": "right"}]}]}),
    ts("Leader", [
        target(f'alert_relay_leader{{{R}}}', "{{instance}}"),
        target(f'increase(alert_relay_leader_changes_total{{{R}}}[1h])', "changes per hour {{instance}}", "B"),
    ], "none", 12, 44, fieldConfig={"defaults": {"unit": "none", "mappings": LEADER}, "overrides": []}),
    ts("Storage", [
        target(f'histogram_quantile(0.99, sum by (le) (rate(alert_relay_storage_commit_duration_seconds_bucket{{{R}}}[{RATE}])))', "commit p99"),
        target(f'sum(increase(alert_relay_storage_errors_total{{{R}}}[1h]))', "errors per hour", "B"),
    ], "s", 0, 52),
    ts("Re-sync with Alertmanager", [
        target(f'time() - (alert_relay_resync_last_success_timestamp_seconds{{{R}}} > 0)', "since the last success {{instance}}"),
        target(f'increase(alert_relay_resync_errors_total{{{R}}}[1h])', "errors per hour {{instance}}", "B"),
    ], "s", 12, 52),
], templating=relay_variables, links=[{"title": "Fleet overview", "type": "link", "url": "/d/pifleet-fleet"}])

os.makedirs(ARGS.out, exist_ok=True)
for name, d in [("fleet-overview", fleet), ("device-detail", device), ("alert-relay", relay)]:
    with open(os.path.join(ARGS.out, name + ".json"), "w") as f:
        json.dump(d, f, indent=2, ensure_ascii=False)
        f.write("\n")
