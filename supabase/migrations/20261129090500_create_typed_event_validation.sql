-- The typed event that public.apply_stripe_event accepts, and its strict
-- validation. The shape is defined once, in schema/typed_event.schema.json
-- (the sidecar checks its normaliser against the same file); this migration
-- stores that schema and unfolds it into a table of fields, so an event is
-- checked with one set-based query per object. A test keeps the stored copy
-- equal to the file. Integral numbers such as 5.0 count as integers, as in
-- JSON Schema.

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
        },
        "created": {
          "type": [
            "integer",
            "null"
          ],
          "minimum": 0,
          "maximum": 253402300799,
          "description": "the invoice's own created (when its lines were billed); orders its line against plan changes. Optional: the event's created stands in."
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

-- One row per field of each object kind: 'event' (the envelope), each
-- object key ('invoice', ...), and 'subscription.previous'.
create table tally.typed_event_fields (
  object_kind text not null,
  field text not null,
  json_types text[] not null,
  is_required boolean not null,
  allowed jsonb,
  min_length integer,
  max_length integer,
  minimum numeric,
  maximum numeric,
  primary key (object_kind, field)
);

-- Which object key each event type carries.
create table tally.typed_event_objects (
  event_type text primary key,
  object_key text not null
);

create index typed_event_objects_object_key_idx on tally.typed_event_objects (object_key);

alter table tally.typed_event_fields enable row level security;
alter table tally.typed_event_objects enable row level security;
revoke all on table tally.typed_event_fields, tally.typed_event_objects
  from public, anon, authenticated;

create function tally.unfold_schema_object(p_kind text, p_object_schema jsonb) returns void
language sql
set search_path = ''
as $$
  insert into tally.typed_event_fields (object_kind, field, json_types, is_required, allowed,
                                        min_length, max_length, minimum, maximum)
  select p_kind,
         property.key,
         case
           when property.value ? 'const' then array[jsonb_typeof(property.value -> 'const')]
           when jsonb_typeof(property.value -> 'type') = 'array'
             then array(select jsonb_array_elements_text(property.value -> 'type'))
           when property.value ? 'type' then array[property.value ->> 'type']
           else array(select distinct jsonb_typeof(v)
                        from jsonb_array_elements(property.value -> 'enum') as v)
         end,
         coalesce(p_object_schema -> 'required', '[]'::jsonb) ? property.key,
         coalesce(property.value -> 'enum',
                  case when property.value ? 'const'
                       then jsonb_build_array(property.value -> 'const') end),
         (property.value ->> 'minLength')::integer,
         (property.value ->> 'maxLength')::integer,
         (property.value ->> 'minimum')::numeric,
         (property.value ->> 'maximum')::numeric
    from jsonb_each(p_object_schema -> 'properties') as property;
$$;

select tally.unfold_schema_object('event', schema) from tally.typed_event_schemas where version = 1;
select tally.unfold_schema_object(object.key, object.value)
  from tally.typed_event_schemas s, jsonb_each(s.schema -> 'properties') as object
 where s.version = 1 and object.value ? 'properties' and object.value ? 'required';
select tally.unfold_schema_object('subscription.previous',
                                  schema -> 'properties' -> 'subscription' -> 'properties'
                                         -> 'previous')
  from tally.typed_event_schemas where version = 1;

insert into tally.typed_event_objects (event_type, object_key)
select event_type, rule -> 'then' -> 'required' ->> 0
  from tally.typed_event_schemas s,
       jsonb_array_elements(s.schema -> 'allOf') as rule,
       jsonb_array_elements_text(rule -> 'if' -> 'properties' -> 'type' -> 'enum') as event_type
 where s.version = 1;

drop function tally.unfold_schema_object(text, jsonb);

-- The first problem of one object against its fields, or null.
create function tally.object_problem(p_kind text, p_object jsonb) returns text
language plpgsql
stable
set search_path = ''
as $$
-- PL/pgSQL rather than SQL so that the query's plan is cached per session.
declare
  v_problem text;
begin
  select format('event.%s%s: %s', case when p_kind = 'event' then '' else p_kind || '.' end,
                coalesce(spec.field, left(given.key, 80)), check_.problem)
    from (select * from tally.typed_event_fields where object_kind = p_kind) as spec
    full join jsonb_each(p_object) as given on given.key = spec.field
    cross join lateral (
      select case
        when spec.field is null then 'unexpected field'
        when given.key is null then
          case when spec.is_required then 'required' end
        when not (jsonb_typeof(given.value) = any (spec.json_types)
                  or (jsonb_typeof(given.value) = 'number' and 'integer' = any (spec.json_types)
                      and given.value::text::numeric % 1 = 0)) then
          format('expected %s, got %s', array_to_string(spec.json_types, ' or '),
                 jsonb_typeof(given.value))
        when jsonb_typeof(given.value) = 'number'
             and 'number' <> all (spec.json_types)
             and given.value::text::numeric % 1 <> 0 then
          format('expected %s, got number', array_to_string(spec.json_types, ' or '))
        when spec.allowed is not null and not spec.allowed @> jsonb_build_array(given.value) then
          format('%s is not one of %s', left(given.value::text, 80), spec.allowed)
        when jsonb_typeof(given.value) = 'string'
             and length(given.value #>> '{}') not between coalesce(spec.min_length, 0)
                                                        and coalesce(spec.max_length, 2147483647)
          then 'length out of range'
        when jsonb_typeof(given.value) = 'number'
             and given.value::text::numeric not between coalesce(spec.minimum, '-infinity')
                                                    and coalesce(spec.maximum, 'infinity')
          then 'out of range'
      end as problem
    ) as check_
   where check_.problem is not null
   order by spec.field nulls first, given.key
   limit 1
    into v_problem;
  return v_problem;
end;
$$;

revoke all on function tally.object_problem(text,jsonb)
  from public, anon, authenticated;

create function tally.validate_typed_event(p_event jsonb) returns void
language plpgsql
stable
set search_path = ''
as $$
declare
  v_object_key text;
  v_problem text;
begin
  if jsonb_typeof(p_event) is distinct from 'object' then
    v_problem := 'event: expected object, got ' || coalesce(jsonb_typeof(p_event), 'nothing');
  else
    v_problem := tally.object_problem('event', p_event);
  end if;
  if v_problem is null then
    select object_key into v_object_key from tally.typed_event_objects
     where event_type = p_event ->> 'type';
    if not p_event ? v_object_key then
      v_problem := format('event.%s: required for %s', v_object_key, p_event ->> 'type');
    elsif exists (select 1 from jsonb_object_keys(p_event) as given (key)
                   join tally.typed_event_objects o on o.object_key = given.key
                  where given.key <> v_object_key) then
      v_problem := format('event: only %s may accompany %s', v_object_key, p_event ->> 'type');
    elsif jsonb_typeof(p_event -> v_object_key) = 'object' then
      v_problem := tally.object_problem(v_object_key, p_event -> v_object_key);
    end if;
  end if;
  if v_problem is null and jsonb_typeof(p_event -> 'subscription' -> 'previous') = 'object' then
    v_problem := tally.object_problem('subscription.previous',
                                      p_event -> 'subscription' -> 'previous');
  end if;
  if v_problem is not null then
    raise exception using
      errcode = '22023',
      message = 'invalid typed event: ' || v_problem,
      hint = 'apply_stripe_event takes the typed event of schema/typed_event.schema.json';
  end if;
end;
$$;

revoke all on function tally.validate_typed_event(jsonb)
  from public, anon, authenticated;
