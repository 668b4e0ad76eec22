-- The typed event that public.apply_stripe_event accepts, and its strict
-- validation. The shape is defined once, in schema/typed_event.schema.json
-- (the sidecar validates its normaliser against the same file); this
-- migration stores that schema and validates events against it with a
-- small interpreter of the JSON Schema keywords it uses. A test keeps the
-- stored copy equal to the file.

create table tally.typed_event_schemas (
  version integer primary key,
  schema jsonb not null
);

alter table tally.typed_event_schemas enable row level security;
revoke all on table tally.typed_event_schemas from public, anon, authenticated;

insert into tally.typed_event_schemas (version, schema) values (1, $schema${
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "$id": "https://tally.example/schema/typed_event.schema.json",
  "title": "Typed Stripe event (version 1)",
  "description": "The one shape public.apply_stripe_event accepts. The sidecar normalises both Stripe payload layouts (pre-basil and basil-or-later) into it; the database validates it strictly (tally.validate_typed_event). Exactly one object key, named by the event type, is present. Ids and metadata are passed through as strings; timestamps are Unix seconds; amounts are integers in the currency's smallest unit.",
  "type": "object",
  "additionalProperties": false,
  "required": [
    "schema_version",
    "id",
    "type",
    "created",
    "livemode",
    "api_version",
    "layout",
    "raw"
  ],
  "properties": {
    "schema_version": {
      "const": 1
    },
    "id": {
      "type": "string",
      "minLength": 1,
      "maxLength": 255,
      "description": "Stripe event id (evt_...)"
    },
    "type": {
      "enum": [
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "invoice.paid",
        "invoice.payment_failed",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "charge.refunded",
        "charge.dispute.created",
        "charge.dispute.closed"
      ]
    },
    "created": {
      "type": "integer",
      "minimum": 0,
      "description": "Stripe event created, Unix seconds",
      "maximum": 253402300799
    },
    "livemode": {
      "type": "boolean"
    },
    "api_version": {
      "type": [
        "string",
        "null"
      ],
      "minLength": 1,
      "maxLength": 64
    },
    "layout": {
      "enum": [
        "legacy",
        "basil"
      ],
      "description": "legacy: API versions up to 2025-02-24.acacia; basil: 2025-03-31.basil and later"
    },
    "raw": {
      "type": "object",
      "description": "the Stripe event exactly as received, for the audit record"
    },
    "checkout_session": {
      "type": "object",
      "additionalProperties": false,
      "properties": {
        "id": {
          "type": "string",
          "minLength": 1,
          "maxLength": 255,
          "description": "Checkout Session id (cs_...); business key of a pack purchase"
        },
        "mode": {
          "enum": [
            "payment",
            "subscription",
            "setup"
          ]
        },
        "status": {
          "type": [
            "string",
            "null"
          ],
          "description": "open | complete | expired"
        },
        "payment_status": {
          "enum": [
            "paid",
            "unpaid",
            "no_payment_required"
          ]
        },
        "customer_id": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 255
        },
        "client_reference_id": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 255,
          "description": "user id hint (first in SPEC 3.5 order)"
        },
        "metadata_user_id": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 255,
          "description": "metadata.user_id: user id hint"
        },
        "metadata_price_id": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 255,
          "description": "metadata.price_id written by our sidecar; the pack's price"
        },
        "subscription_id": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 255
        },
        "payment_intent_id": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 255,
          "description": "links later refunds and disputes to the pack"
        },
        "amount_total": {
          "type": [
            "integer",
            "null"
          ],
          "minimum": 0,
          "maximum": 2147483647
        },
        "currency": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 16
        }
      },
      "required": [
        "amount_total",
        "client_reference_id",
        "currency",
        "customer_id",
        "id",
        "metadata_price_id",
        "metadata_user_id",
        "mode",
        "payment_intent_id",
        "payment_status",
        "status",
        "subscription_id"
      ],
      "description": "checkout.session.completed | async_payment_succeeded | async_payment_failed"
    },
    "invoice": {
      "type": "object",
      "additionalProperties": false,
      "properties": {
        "id": {
          "type": "string",
          "minLength": 1,
          "maxLength": 255
        },
        "customer_id": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 255
        },
        "subscription_id": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 255,
          "description": "legacy: invoice.subscription; basil: parent.subscription_details.subscription"
        },
        "status": {
          "type": "string",
          "minLength": 1,
          "maxLength": 64,
          "description": "draft | open | paid | uncollectible | void"
        },
        "billing_reason": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 64
        },
        "amount_paid": {
          "type": "integer",
          "minimum": 0,
          "maximum": 2147483647
        },
        "amount_due": {
          "type": "integer",
          "minimum": 0,
          "maximum": 2147483647
        },
        "currency": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 16
        },
        "subscription_metadata_user_id": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 255,
          "description": "user_id in the subscription metadata snapshot on the invoice"
        },
        "price_id": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 255,
          "description": "price of the non-proration subscription line (null if none)"
        },
        "period_start": {
          "type": [
            "integer",
            "null"
          ],
          "minimum": 0,
          "description": "service period of that line",
          "maximum": 253402300799
        },
        "period_end": {
          "type": [
            "integer",
            "null"
          ],
          "minimum": 0,
          "maximum": 253402300799
        },
        "charge_id": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 255,
          "description": "legacy layout only"
        },
        "payment_intent_id": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 255,
          "description": "legacy layout only"
        }
      },
      "required": [
        "amount_due",
        "amount_paid",
        "billing_reason",
        "charge_id",
        "currency",
        "customer_id",
        "id",
        "payment_intent_id",
        "period_end",
        "period_start",
        "price_id",
        "status",
        "subscription_id",
        "subscription_metadata_user_id"
      ],
      "description": "invoice.paid | invoice.payment_failed"
    },
    "subscription": {
      "type": "object",
      "additionalProperties": false,
      "properties": {
        "id": {
          "type": "string",
          "minLength": 1,
          "maxLength": 255
        },
        "customer_id": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 255
        },
        "status": {
          "enum": [
            "incomplete",
            "incomplete_expired",
            "trialing",
            "active",
            "past_due",
            "canceled",
            "unpaid",
            "paused"
          ]
        },
        "created": {
          "type": [
            "integer",
            "null"
          ],
          "minimum": 0,
          "description": "the subscription object's own created",
          "maximum": 253402300799
        },
        "price_id": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 255,
          "description": "price of the (first) subscription item"
        },
        "current_period_start": {
          "type": [
            "integer",
            "null"
          ],
          "minimum": 0,
          "description": "legacy: on the subscription; basil: on the item",
          "maximum": 253402300799
        },
        "current_period_end": {
          "type": [
            "integer",
            "null"
          ],
          "minimum": 0,
          "maximum": 253402300799
        },
        "cancel_at_period_end": {
          "type": "boolean"
        },
        "canceled_at": {
          "type": [
            "integer",
            "null"
          ],
          "minimum": 0,
          "maximum": 253402300799
        },
        "ended_at": {
          "type": [
            "integer",
            "null"
          ],
          "minimum": 0,
          "maximum": 253402300799
        },
        "metadata_user_id": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 255
        },
        "previous": {
          "type": [
            "object",
            "null"
          ],
          "additionalProperties": false,
          "description": "the state the update left (from data.previous_attributes), only the keys that changed",
          "properties": {
            "status": {
              "type": "string",
              "minLength": 1,
              "maxLength": 64
            },
            "price_id": {
              "type": [
                "string",
                "null"
              ],
              "minLength": 1,
              "maxLength": 255
            },
            "current_period_start": {
              "type": [
                "integer",
                "null"
              ],
              "minimum": 0,
              "maximum": 253402300799
            },
            "current_period_end": {
              "type": [
                "integer",
                "null"
              ],
              "minimum": 0,
              "maximum": 253402300799
            },
            "cancel_at_period_end": {
              "type": "boolean"
            }
          }
        }
      },
      "required": [
        "cancel_at_period_end",
        "canceled_at",
        "created",
        "current_period_end",
        "current_period_start",
        "customer_id",
        "ended_at",
        "id",
        "metadata_user_id",
        "previous",
        "price_id",
        "status"
      ],
      "description": "customer.subscription.created | updated | deleted"
    },
    "charge": {
      "type": "object",
      "additionalProperties": false,
      "properties": {
        "id": {
          "type": "string",
          "minLength": 1,
          "maxLength": 255
        },
        "customer_id": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 255
        },
        "payment_intent_id": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 255
        },
        "invoice_id": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 255,
          "description": "legacy layout only (basil charges have no invoice)"
        },
        "metadata_user_id": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 255
        },
        "amount": {
          "type": "integer",
          "minimum": 0,
          "maximum": 2147483647
        },
        "amount_refunded": {
          "type": "integer",
          "minimum": 0,
          "description": "cumulative",
          "maximum": 2147483647
        },
        "currency": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 16
        }
      },
      "required": [
        "amount",
        "amount_refunded",
        "currency",
        "customer_id",
        "id",
        "invoice_id",
        "metadata_user_id",
        "payment_intent_id"
      ],
      "description": "charge.refunded"
    },
    "dispute": {
      "type": "object",
      "additionalProperties": false,
      "properties": {
        "id": {
          "type": "string",
          "minLength": 1,
          "maxLength": 255
        },
        "charge_id": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 255
        },
        "payment_intent_id": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 255
        },
        "amount": {
          "type": "integer",
          "minimum": 0,
          "maximum": 2147483647
        },
        "currency": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 16
        },
        "status": {
          "type": "string",
          "minLength": 1,
          "maxLength": 64,
          "description": "warning_needs_response | warning_under_review | warning_closed | needs_response | under_review | won | lost | prevented"
        },
        "reason": {
          "type": [
            "string",
            "null"
          ],
          "minLength": 1,
          "maxLength": 64
        }
      },
      "required": [
        "amount",
        "charge_id",
        "currency",
        "id",
        "payment_intent_id",
        "reason",
        "status"
      ],
      "description": "charge.dispute.created | charge.dispute.closed"
    }
  },
  "allOf": [
    {
      "if": {
        "properties": {
          "type": {
            "enum": [
              "checkout.session.completed",
              "checkout.session.async_payment_succeeded",
              "checkout.session.async_payment_failed"
            ]
          }
        }
      },
      "then": {
        "required": [
          "checkout_session"
        ],
        "not": {
          "anyOf": [
            {
              "required": [
                "invoice"
              ]
            },
            {
              "required": [
                "subscription"
              ]
            },
            {
              "required": [
                "charge"
              ]
            },
            {
              "required": [
                "dispute"
              ]
            }
          ]
        }
      }
    },
    {
      "if": {
        "properties": {
          "type": {
            "enum": [
              "invoice.paid",
              "invoice.payment_failed"
            ]
          }
        }
      },
      "then": {
        "required": [
          "invoice"
        ],
        "not": {
          "anyOf": [
            {
              "required": [
                "checkout_session"
              ]
            },
            {
              "required": [
                "subscription"
              ]
            },
            {
              "required": [
                "charge"
              ]
            },
            {
              "required": [
                "dispute"
              ]
            }
          ]
        }
      }
    },
    {
      "if": {
        "properties": {
          "type": {
            "enum": [
              "customer.subscription.created",
              "customer.subscription.updated",
              "customer.subscription.deleted"
            ]
          }
        }
      },
      "then": {
        "required": [
          "subscription"
        ],
        "not": {
          "anyOf": [
            {
              "required": [
                "checkout_session"
              ]
            },
            {
              "required": [
                "invoice"
              ]
            },
            {
              "required": [
                "charge"
              ]
            },
            {
              "required": [
                "dispute"
              ]
            }
          ]
        }
      }
    },
    {
      "if": {
        "properties": {
          "type": {
            "enum": [
              "charge.refunded"
            ]
          }
        }
      },
      "then": {
        "required": [
          "charge"
        ],
        "not": {
          "anyOf": [
            {
              "required": [
                "checkout_session"
              ]
            },
            {
              "required": [
                "invoice"
              ]
            },
            {
              "required": [
                "subscription"
              ]
            },
            {
              "required": [
                "dispute"
              ]
            }
          ]
        }
      }
    },
    {
      "if": {
        "properties": {
          "type": {
            "enum": [
              "charge.dispute.created",
              "charge.dispute.closed"
            ]
          }
        }
      },
      "then": {
        "required": [
          "dispute"
        ],
        "not": {
          "anyOf": [
            {
              "required": [
                "checkout_session"
              ]
            },
            {
              "required": [
                "invoice"
              ]
            },
            {
              "required": [
                "subscription"
              ]
            },
            {
              "required": [
                "charge"
              ]
            }
          ]
        }
      }
    }
  ]
}$schema$);

-- Null when value matches schema, else the first problem found, with its path.
-- Supports: type, enum, const, required, properties, additionalProperties
-- (false), minLength, maxLength, minimum, maximum, allOf, anyOf, not, if/then.
create function tally.json_schema_problem(p_value jsonb, p_schema jsonb, p_path text)
returns text
language plpgsql
immutable
set search_path = ''
as $$
declare
  v_type text := jsonb_typeof(p_value);
  v_types jsonb;
  v_key text;
  v_sub jsonb;
  v_problem text;
begin
  if p_schema ? 'type' then
    v_types := case jsonb_typeof(p_schema -> 'type')
                 when 'array' then p_schema -> 'type'
                 else jsonb_build_array(p_schema -> 'type') end;
    if not (v_types ? v_type
            or (v_type = 'number' and v_types ? 'integer' and p_value::text !~ '[.eE]')) then
      return format('%s: expected %s, got %s', p_path, v_types #>> '{}', v_type);
    end if;
  end if;
  if p_schema ? 'const' and p_value is distinct from p_schema -> 'const' then
    return format('%s: must be %s', p_path, p_schema -> 'const');
  end if;
  if p_schema ? 'enum' and not (p_schema -> 'enum') @> jsonb_build_array(p_value) then
    return format('%s: %s is not one of %s', p_path, left(p_value::text, 80), p_schema -> 'enum');
  end if;
  if v_type = 'string' then
    if length(p_value #>> '{}') < coalesce((p_schema ->> 'minLength')::integer, 0)
       or length(p_value #>> '{}') > coalesce((p_schema ->> 'maxLength')::integer, 2147483647) then
      return format('%s: length out of range', p_path);
    end if;
  elsif v_type = 'number'
        and ((p_value #>> '{}')::numeric < (p_schema ->> 'minimum')::numeric
             or (p_value #>> '{}')::numeric > (p_schema ->> 'maximum')::numeric) then
    return format('%s: out of range', p_path);
  elsif v_type = 'object' then
    for v_key in select jsonb_array_elements_text(coalesce(p_schema -> 'required', '[]')) loop
      if not p_value ? v_key then
        return format('%s.%s: required', p_path, v_key);
      end if;
    end loop;
    for v_key, v_sub in select key, value from jsonb_each(p_value) loop
      if p_schema -> 'properties' ? v_key then
        v_problem := tally.json_schema_problem(v_sub, p_schema -> 'properties' -> v_key,
                                               p_path || '.' || v_key);
        if v_problem is not null then
          return v_problem;
        end if;
      elsif p_schema -> 'additionalProperties' = 'false'::jsonb then
        return format('%s.%s: unexpected field', p_path, left(v_key, 80));
      end if;
    end loop;
  end if;
  for v_sub in select jsonb_array_elements(coalesce(p_schema -> 'allOf', '[]')) loop
    v_problem := tally.json_schema_problem(p_value, v_sub, p_path);
    if v_problem is not null then
      return v_problem;
    end if;
  end loop;
  if p_schema ? 'anyOf' and not exists (
       select 1 from jsonb_array_elements(p_schema -> 'anyOf') as alternative (s)
        where tally.json_schema_problem(p_value, alternative.s, p_path) is null) then
    return format('%s: matches none of the alternatives', p_path);
  end if;
  if p_schema ? 'not' and tally.json_schema_problem(p_value, p_schema -> 'not', p_path) is null then
    return format('%s: matches a forbidden shape', p_path);
  end if;
  if p_schema ? 'if' and p_schema ? 'then'
     and tally.json_schema_problem(p_value, p_schema -> 'if', p_path) is null then
    return tally.json_schema_problem(p_value, p_schema -> 'then', p_path);
  end if;
  return null;
end;
$$;

revoke all on function tally.json_schema_problem(jsonb, jsonb, text) from public, anon, authenticated;

-- Raise 22023 (PostgREST: 400) for an event that is not a valid typed event.
create function tally.validate_typed_event(p_event jsonb) returns void
language plpgsql
stable
set search_path = ''
as $$
declare
  v_problem text;
begin
  select tally.json_schema_problem(p_event, schema, 'event') into v_problem
    from tally.typed_event_schemas where version = 1;
  if v_problem is not null then
    raise exception using
      errcode = '22023',
      message = 'invalid typed event: ' || v_problem,
      hint = 'apply_stripe_event takes the typed event of schema/typed_event.schema.json';
  end if;
end;
$$;

revoke all on function tally.validate_typed_event(jsonb) from public, anon, authenticated;
