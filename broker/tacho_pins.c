/*
 * tacho_pins: a Mosquitto 2.0 plugin that holds each device's certificate to the thumbprint tacho
 * recorded when it was registered.
 *
 * With use_identity_as_username Mosquitto consults no authentication plugin: any certificate of the
 * device CA with a device's common name gets that device's rights. Loaded before the Dynamic
 * Security plugin, this one refuses every publish and subscription of a client that presents a
 * certificate whose SHA-256 thumbprint is not the one pinned for its user name, or that has no pin
 * at all (fail closed), unless its user name is a whole subject ("CN=...,O=...": a service on its own
 * listener, which no device id can be); it leaves every other decision to the next plugin.
 *
 * tacho keeps the pins through $CONTROL/tacho-pins/v1 (the broker's access list decides who may
 * publish there). A request is text: its first line a tag, then one command per line:
 *   pin USERNAME THUMBPRINT     (64 lowercase hex digits)
 *   unpin USERNAME
 *   mark                        (every pin of tacho's registry is in place)
 *   marked                      (answered with an error when there is no mark)
 * The answer, to the requesting client only, on $CONTROL/tacho-pins/v1/response, is JSON in the
 * shape of the Dynamic Security plugin's: {"responses":[{"command":..,"correlationData":TAG
 * [,"error":..]},...]}. Pins and the mark are kept in plugin_opt_pins_file (rewritten on change).
 *
 * Build: gcc -O2 -shared -fPIC -o tacho_pins.so tacho_pins.c -lcrypto
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "mosquitto.h"
#include "mosquitto_broker.h"
#include "mosquitto_plugin.h"

#define CONTROL_TOPIC "$CONTROL/tacho-pins/v1"
#define RESPONSE_TOPIC "$CONTROL/tacho-pins/v1/response"
#define HEX_LEN 64
#define MAX_NAME 256
/* Commands answered per request (tacho sends at most 50): a bound on the answer's size. */
#define MAX_COMMANDS 10000

struct slot {
	char *username; /* NULL: empty; TOMBSTONE: removed */
	char thumbprint[HEX_LEN + 1];
};

static char tombstone_mark;
#define TOMBSTONE (&tombstone_mark)

static struct slot *slots;
static size_t capacity, used, live;
static bool marked;
static char *pins_file;
static mosquitto_plugin_id_t *plugin_id;

static uint64_t hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for(; *s; s++){
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	}
	return h;
}

/* The slot of username, or the empty slot where it would go. */
static struct slot *lookup(const char *username)
{
	struct slot *free_slot = NULL;
	size_t i = hash(username) & (capacity - 1);
	for(;;){
		struct slot *s = &slots[i];
		if(s->username == NULL){
			return free_slot ? free_slot : s;
		}
		if(s->username == TOMBSTONE){
			if(!free_slot) free_slot = s;
		}else if(!strcmp(s->username, username)){
			return s;
		}
		i = (i + 1) & (capacity - 1);
	}
}

static bool grow(void)
{
	size_t old_capacity = capacity;
	struct slot *old = slots;
	capacity = capacity ? capacity * 2 : 1024;
	slots = calloc(capacity, sizeof(struct slot));
	if(!slots){
		slots = old;
		capacity = old_capacity;
		return false;
	}
	used = live;
	for(size_t i = 0; i < old_capacity; i++){
		if(old[i].username && old[i].username != TOMBSTONE){
			*lookup(old[i].username) = old[i];
		}
	}
	free(old);
	return true;
}

/* Pins username to thumbprint; *changed says whether that changed anything. */
static bool pin(const char *username, const char *thumbprint, bool *changed)
{
	if((used + 1) * 2 > capacity && !grow()) return false;
	struct slot *s = lookup(username);
	if(s->username && s->username != TOMBSTONE && !strcmp(s->thumbprint, thumbprint)) return true;
	*changed = true;
	if(s->username == NULL || s->username == TOMBSTONE){
		char *copy = strdup(username);
		if(!copy) return false;
		if(s->username == NULL) used++;
		s->username = copy;
		live++;
	}
	memcpy(s->thumbprint, thumbprint, HEX_LEN + 1);
	return true;
}

static void unpin(const char *username, bool *changed)
{
	if(!capacity) return;
	struct slot *s = lookup(username);
	if(s->username && s->username != TOMBSTONE){
		free(s->username);
		s->username = TOMBSTONE;
		live--;
		*changed = true;
	}
}

static const char *pinned(const char *username)
{
	if(!capacity || !username) return NULL;
	struct slot *s = lookup(username);
	return (s->username && s->username != TOMBSTONE) ? s->thumbprint : NULL;
}

/* 1 to 255 printable ASCII characters, no quote or backslash: safe to echo in the JSON answer. */
static bool valid_name(const char *s)
{
	size_t n = strlen(s);
	for(const char *c = s; *c; c++){
		if(!isgraph((unsigned char)*c) || *c == '"' || *c == '\\') return false;
	}
	return n > 0 && n < MAX_NAME;
}

static bool valid_thumbprint(const char *s)
{
	if(strlen(s) != HEX_LEN) return false;
	for(; *s; s++){
		if(!isxdigit((unsigned char)*s) || isupper((unsigned char)*s)) return false;
	}
	return true;
}

/* Writes the pins and the mark to pins_file (through a temporary file and a rename). */
static bool save(void)
{
	if(!pins_file) return true;
	size_t n = strlen(pins_file) + 5;
	char *tmp = malloc(n);
	if(!tmp) return false;
	snprintf(tmp, n, "%s.new", pins_file);
	FILE *f = fopen(tmp, "w");
	bool ok = f != NULL;
	if(f){
		if(marked) ok = fprintf(f, "mark\n") > 0;
		for(size_t i = 0; ok && i < capacity; i++){
			if(slots[i].username && slots[i].username != TOMBSTONE){
				ok = fprintf(f, "pin %s %s\n", slots[i].username, slots[i].thumbprint) > 0;
			}
		}
		ok = (fclose(f) == 0) && ok;
	}
	ok = ok && rename(tmp, pins_file) == 0;
	if(!ok) mosquitto_log_printf(MOSQ_LOG_ERR, "tacho_pins: cannot write %s", pins_file);
	free(tmp);
	return ok;
}

static void load(void)
{
	FILE *f = fopen(pins_file, "r");
	if(!f) return;
	char line[MAX_NAME + HEX_LEN + 16], username[MAX_NAME], thumbprint[HEX_LEN + 2];
	while(fgets(line, sizeof(line), f)){
		if(!strcmp(line, "mark\n")){
			marked = true;
		}else if(sscanf(line, "pin %255s %65s", username, thumbprint) == 2 && valid_thumbprint(thumbprint)){
			bool ignored = false;
			pin(username, thumbprint, &ignored);
		}
	}
	fclose(f);
	mosquitto_log_printf(MOSQ_LOG_INFO, "tacho_pins: %zu pins loaded from %s", live, pins_file);
}

/* Every action of a pinned client whose certificate is not the pinned one is refused. */
static int on_acl_check(int event, void *event_data, void *userdata)
{
	(void)event;
	(void)userdata;
	struct mosquitto_evt_acl_check *ed = event_data;
	const char *username = mosquitto_client_username(ed->client);
	X509 *cert = mosquitto_client_certificate(ed->client);
	/* Pins hold certificate clients only (a device's listener); others are not this plugin's. */
	if(!cert) return MOSQ_ERR_PLUGIN_DEFER;
	const char *expected = pinned(username);
	if(!expected){
		X509_free(cert);
		/* A service named by its whole subject ("CN=tacho,O=..."), which no device id can be, is
		 * not pinned; a device certificate without a pin may do nothing (fail closed: a pins file
		 * lost while the rights survived does not let any certificate of the CA act as a device). */
		if(username && strchr(username, '=')) return MOSQ_ERR_PLUGIN_DEFER;
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "tacho_pins: refused %s: no certificate registered for it",
				username ? username : "(no user name)");
		return MOSQ_ERR_ACL_DENIED;
	}
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	char hex[HEX_LEN + 1] = {0};
	bool ok = X509_digest(cert, EVP_sha256(), md, &len) == 1 && len * 2 == HEX_LEN;
	X509_free(cert);
	for(unsigned int i = 0; ok && i < len; i++){
		snprintf(&hex[i * 2], 3, "%02x", md[i]);
	}
	if(ok && !strcmp(hex, expected)) return MOSQ_ERR_PLUGIN_DEFER;
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "tacho_pins: refused %s: its certificate is not the one registered",
			mosquitto_client_username(ed->client));
	return MOSQ_ERR_ACL_DENIED;
}

/* Appends text to the growing answer. */
static bool append(char **out, size_t *len, size_t *cap, const char *text)
{
	size_t n = strlen(text);
	if(*len + n + 1 > *cap){
		size_t want = (*cap ? *cap * 2 : 1024) + n;
		char *bigger = realloc(*out, want);
		if(!bigger) return false;
		*out = bigger;
		*cap = want;
	}
	memcpy(*out + *len, text, n + 1);
	*len += n;
	return true;
}

static int on_control(int event, void *event_data, void *userdata)
{
	(void)event;
	(void)userdata;
	struct mosquitto_evt_control *ed = event_data;
	mosquitto_log_printf(MOSQ_LOG_DEBUG, "tacho_pins: %u bytes of commands from %s", ed->payloadlen, mosquitto_client_id(ed->client));
	char *text = malloc(ed->payloadlen + 1);
	if(!text) return MOSQ_ERR_NOMEM;
	memcpy(text, ed->payload, ed->payloadlen);
	text[ed->payloadlen] = '\0';

	char *save_ptr = NULL;
	char *tag = strtok_r(text, "\n", &save_ptr);
	if(!tag || !valid_name(tag)){
		free(text);
		return MOSQ_ERR_SUCCESS;
	}
	char *out = NULL, entry[MAX_NAME * 2 + 128];
	size_t len = 0, cap = 0, count = 0;
	bool changed = false, ok = append(&out, &len, &cap, "{\"responses\":[");
	for(char *line = strtok_r(NULL, "\n", &save_ptr); ok && line && count < MAX_COMMANDS;
			line = strtok_r(NULL, "\n", &save_ptr), count++){
		char command[16] = "", username[MAX_NAME] = "", thumbprint[HEX_LEN + 2] = "";
		const char *error = NULL;
		int fields = sscanf(line, "%15s %255s %65s", command, username, thumbprint);
		if(!strcmp(command, "pin") && fields == 3 && valid_name(username) && valid_thumbprint(thumbprint)){
			if(!pin(username, thumbprint, &changed)) error = "Out of memory";
		}else if(!strcmp(command, "unpin") && fields == 2 && valid_name(username)){
			unpin(username, &changed);
		}else if(!strcmp(command, "mark") && fields == 1){
			changed = changed || !marked;
			marked = true;
		}else if(!strcmp(command, "marked") && fields == 1){
			if(!marked) error = "Not marked";
		}else{
			error = "Invalid command";
			strcpy(command, "invalid");
		}
		snprintf(entry, sizeof(entry), "%s{\"command\":\"%s\",\"correlationData\":\"%s\"%s%s%s}",
				count > 0 ? "," : "", command, tag, error ? ",\"error\":\"" : "", error ? error : "", error ? "\"" : "");
		ok = append(&out, &len, &cap, entry);
	}
	if(changed && !save()){
		ok = false;
	}
	if(ok && append(&out, &len, &cap, "]}")){
		mosquitto_broker_publish_copy(mosquitto_client_id(ed->client), RESPONSE_TOPIC, (int)len, out, 0, false, NULL);
	}
	free(out);
	free(text);
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	plugin_id = identifier;
	for(int i = 0; i < option_count; i++){
		if(!strcmp(options[i].key, "pins_file")) pins_file = strdup(options[i].value);
	}
	if(!pins_file){
		mosquitto_log_printf(MOSQ_LOG_ERR, "tacho_pins: plugin_opt_pins_file is required");
		return MOSQ_ERR_INVAL;
	}
	if(!grow()) return MOSQ_ERR_NOMEM;
	load();
	int rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL);
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_CONTROL, on_control, CONTROL_TOPIC, NULL);
	}
	return rc;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_CONTROL, on_control, CONTROL_TOPIC);
	for(size_t i = 0; i < capacity; i++){
		if(slots[i].username && slots[i].username != TOMBSTONE) free(slots[i].username);
	}
	free(slots);
	free(pins_file);
	slots = NULL;
	pins_file = NULL;
	capacity = used = live = 0;
	marked = false;
	return MOSQ_ERR_SUCCESS;
}
